#!/usr/bin/env bash
# make-fixtures.sh regenerates the keystores that package secrets decodes in its
# tests, with the real tools users have: OpenSSL 3 and Java 17 keytool.
#
# TEST ONLY: every key and the password below are public test fixtures. Never
# use them, or this CA, for anything but tests.
#
# Usage: bash secrets/testdata/make-fixtures.sh   (writes into secrets/testdata/)
set -euo pipefail

cd "$(dirname "$0")"
PASS=fixture-pass-123
DAYS=36500 # 100 years, so the fixtures do not expire under the tests
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One self-contained OpenSSL config, so the system's openssl.cnf defaults do
# not leak extensions into the certificates.
cat >"$work/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
export OPENSSL_CONF="$work/openssl.cnf"

serial() { echo "0x$(openssl rand -hex 15)"; }

# sign CSR SUBJECT_NAME EXT OUT: signs a CSR with the test CA.
sign() {
	openssl x509 -req -in "$1" -CA ca.pem -CAkey ca.key -set_serial "$(serial)" \
		-days "$DAYS" -sha256 -extfile "$OPENSSL_CONF" -extensions "$2" -out "$3" 2>/dev/null
}

rm -f ./*.pem ./*.key ./*.p12 ./*.jks

# Test CA and an independent "other" CA for untrusted-server tests.
openssl req -x509 -new -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days "$DAYS" -sha256 \
	-subj "/O=mtlsrelay tests/CN=mtlsrelay test CA" -extensions v3_ca -set_serial "$(serial)"
openssl req -x509 -new -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days "$DAYS" -sha256 \
	-subj "/O=mtlsrelay tests/CN=mtlsrelay other CA" -extensions v3_ca -set_serial "$(serial)"

# Server certificate for localhost, 127.0.0.1 and ::1.
openssl req -new -newkey rsa:2048 -nodes -keyout server.key -out "$work/server.csr" -subj "/CN=localhost"
sign "$work/server.csr" server server.pem

# The client key and certificate, CN=mtlsrelay-test-client, in every format.
openssl req -new -newkey rsa:2048 -nodes -keyout "$work/client.key" -out "$work/client.csr" \
	-subj "/O=mtlsrelay tests/CN=mtlsrelay-test-client"
sign "$work/client.csr" client "$work/client-cert.pem"

# PKCS#12, OpenSSL 3 defaults (PBES2/AES-256-CBC, SHA-256 MAC) and -legacy (RC2-40, 3DES, SHA-1 MAC).
openssl pkcs12 -export -in "$work/client-cert.pem" -inkey "$work/client.key" -certfile ca.pem \
	-name mtlsrelay-test-client -passout "pass:$PASS" -out client-openssl.p12
openssl pkcs12 -export -legacy -in "$work/client-cert.pem" -inkey "$work/client.key" -certfile ca.pem \
	-name mtlsrelay-test-client -passout "pass:$PASS" -out client-openssl-legacy.p12

# PEM bundles: chain then key; unencrypted PKCS#8, encrypted PKCS#8 (PBES2
# AES-256), traditional PKCS#1 and legacy "Proc-Type: 4,ENCRYPTED" PKCS#1.
openssl pkcs8 -topk8 -nocrypt -in "$work/client.key" -out "$work/client-pkcs8.key"
openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$work/client.key" -passout "pass:$PASS" -out "$work/client-enc.key"
openssl rsa -traditional -in "$work/client.key" -out "$work/client-pkcs1.key" 2>/dev/null
openssl rsa -traditional -aes256 -passout "pass:$PASS" -in "$work/client.key" -out "$work/client-legacy-enc.key" 2>/dev/null
cat "$work/client-cert.pem" ca.pem "$work/client-pkcs8.key" >client.pem
cat "$work/client-cert.pem" ca.pem "$work/client-enc.key" >client-encrypted.pem
cat "$work/client-cert.pem" ca.pem "$work/client-pkcs1.key" >client-pkcs1.pem
cat "$work/client-cert.pem" ca.pem "$work/client-legacy-enc.key" >client-legacy-encrypted.pem

# An EC client key in SEC1 form ("EC PRIVATE KEY").
openssl ecparam -name prime256v1 -genkey -noout -out "$work/client-ec.key"
openssl req -new -key "$work/client-ec.key" -out "$work/client-ec.csr" -subj "/O=mtlsrelay tests/CN=mtlsrelay-test-client-ec"
sign "$work/client-ec.csr" client "$work/client-ec-cert.pem"
cat "$work/client-ec-cert.pem" ca.pem "$work/client-ec.key" >client-ec-sec1.pem

# keytool: the CA in a PKCS#12 keystore, so keytool -gencert can sign.
openssl pkcs12 -export -in ca.pem -inkey ca.key -name ca -passout "pass:$PASS" -out "$work/ca.p12"

# keytool_client STORE ALIAS DNAME KEYALG...: the keytool way to get a CA-signed
# key entry: genkeypair, certreq, gencert by the CA, import the chain reply.
keytool_client() {
	local store=$1 alias=$2 dname=$3
	shift 3
	keytool -genkeypair -noprompt -keystore "$store" -storetype PKCS12 -storepass "$PASS" \
		-alias "$alias" -dname "$dname" -validity "$DAYS" "$@"
	keytool -certreq -keystore "$store" -storepass "$PASS" -alias "$alias" -file "$work/$alias.csr"
	keytool -gencert -keystore "$work/ca.p12" -storepass "$PASS" -alias ca -validity "$DAYS" \
		-infile "$work/$alias.csr" -outfile "$work/$alias.crt" -rfc \
		-ext KeyUsage:critical=digitalSignature,keyEncipherment -ext ExtendedKeyUsage=clientAuth \
		-ext BasicConstraints:critical=ca:false
	cat "$work/$alias.crt" ca.pem >"$work/$alias-chain.pem"
	keytool -importcert -noprompt -keystore "$store" -storepass "$PASS" -alias "$alias" \
		-file "$work/$alias-chain.pem" >/dev/null
}

keytool_client client-keytool.p12 mtlsrelay-test-client "CN=mtlsrelay-test-client, O=mtlsrelay tests" \
	-keyalg RSA -keysize 2048
keytool -importkeystore -noprompt -srckeystore client-keytool.p12 -srcstoretype PKCS12 -srcstorepass "$PASS" \
	-destkeystore client-keytool.jks -deststoretype JKS -deststorepass "$PASS" 2>/dev/null

# Two key entries: alpha (RSA) and beta (EC P-256), with different CNs.
keytool_client client-multi.p12 alpha "CN=mtlsrelay-test-alpha, O=mtlsrelay tests" -keyalg RSA -keysize 2048
keytool_client client-multi.p12 beta "CN=mtlsrelay-test-beta, O=mtlsrelay tests" -keyalg EC -groupname secp256r1
keytool -importkeystore -noprompt -srckeystore client-multi.p12 -srcstoretype PKCS12 -srcstorepass "$PASS" \
	-destkeystore client-multi.jks -deststoretype JKS -deststorepass "$PASS" 2>/dev/null

# Truststores holding the test CA as a trusted certificate entry.
keytool -importcert -noprompt -alias mtlsrelay-test-ca -file ca.pem -keystore truststore.p12 \
	-storetype PKCS12 -storepass "$PASS" >/dev/null
keytool -importcert -noprompt -alias mtlsrelay-test-ca -file ca.pem -keystore truststore.jks \
	-storetype JKS -storepass "$PASS" 2>/dev/null >/dev/null

# A truncated keystore.
head -c 1000 client-openssl.p12 >corrupt.p12

ls -l
