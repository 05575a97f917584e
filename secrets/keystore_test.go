package secrets_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

func TestDecodeKeystoreFixtures(t *testing.T) {
	opensslLeaf := pemCert(t, "client.pem")
	ca := pemCert(t, "ca.pem")
	tests := []struct {
		name     string
		file     string
		password string
		format   string
		aliases  []string // key entries, in order
		cn       string   // of the first key entry's leaf
		serialOf *x509.Certificate
		keyType  string
	}{
		{"ok/openssl-p12", "client-openssl.p12", fixturePassword, secrets.FormatPKCS12, []string{"mtlsrelay-test-client"}, "mtlsrelay-test-client", opensslLeaf, "rsa"},
		{"ok/openssl-legacy-p12", "client-openssl-legacy.p12", fixturePassword, secrets.FormatPKCS12, []string{"mtlsrelay-test-client"}, "mtlsrelay-test-client", opensslLeaf, "rsa"},
		{"ok/keytool-p12", "client-keytool.p12", fixturePassword, secrets.FormatPKCS12, []string{"mtlsrelay-test-client"}, "mtlsrelay-test-client", nil, "rsa"},
		{"ok/keytool-jks", "client-keytool.jks", fixturePassword, secrets.FormatJKS, []string{"mtlsrelay-test-client"}, "mtlsrelay-test-client", nil, "rsa"},
		{"ok/keytool-multi-p12", "client-multi.p12", fixturePassword, secrets.FormatPKCS12, []string{"alpha", "beta"}, "mtlsrelay-test-alpha", nil, "rsa"},
		{"ok/keytool-multi-jks", "client-multi.jks", fixturePassword, secrets.FormatJKS, []string{"alpha", "beta"}, "mtlsrelay-test-alpha", nil, "rsa"},
		{"ok/pem-pkcs8", "client.pem", "", secrets.FormatPEM, []string{"mtlsrelay-test-client"}, "mtlsrelay-test-client", opensslLeaf, "rsa"},
		{"ok/pem-pkcs8-password-ignored", "client.pem", fixturePassword, secrets.FormatPEM, []string{"mtlsrelay-test-client"}, "mtlsrelay-test-client", opensslLeaf, "rsa"},
		{"ok/pem-encrypted-pkcs8", "client-encrypted.pem", fixturePassword, secrets.FormatPEM, []string{"mtlsrelay-test-client"}, "mtlsrelay-test-client", opensslLeaf, "rsa"},
		{"ok/pem-pkcs1", "client-pkcs1.pem", "", secrets.FormatPEM, []string{"mtlsrelay-test-client"}, "mtlsrelay-test-client", opensslLeaf, "rsa"},
		{"ok/pem-legacy-encrypted", "client-legacy-encrypted.pem", fixturePassword, secrets.FormatPEM, []string{"mtlsrelay-test-client"}, "mtlsrelay-test-client", opensslLeaf, "rsa"},
		{"ok/pem-ec-sec1", "client-ec-sec1.pem", "", secrets.FormatPEM, []string{"mtlsrelay-test-client-ec"}, "mtlsrelay-test-client-ec", nil, "ecdsa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := secrets.DecodeKeystore(fixture(t, tt.file), []byte(tt.password))
			if err != nil {
				t.Fatalf("DecodeKeystore: %v", err)
			}
			if ks.Format != tt.format {
				t.Errorf("format = %q, want %q", ks.Format, tt.format)
			}
			var aliases []string
			for _, e := range ks.Entries {
				if e.IsKey() {
					aliases = append(aliases, e.Alias)
				}
			}
			if !slices.Equal(aliases, tt.aliases) {
				t.Errorf("key aliases = %q, want %q", aliases, tt.aliases)
			}
			alias := ""
			if len(tt.aliases) > 1 {
				alias = tt.aliases[0]
			}
			cert, err := ks.ClientCertificate(alias)
			if err != nil {
				t.Fatalf("ClientCertificate: %v", err)
			}
			if cert.Leaf == nil || cert.Leaf.Subject.CommonName != tt.cn {
				t.Fatalf("leaf = %v, want CN=%s", cert.Leaf, tt.cn)
			}
			if tt.serialOf != nil && cert.Leaf.SerialNumber.Cmp(tt.serialOf.SerialNumber) != 0 {
				t.Errorf("serial = %x, want %x", cert.Leaf.SerialNumber, tt.serialOf.SerialNumber)
			}
			pub := cert.PrivateKey.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool })
			if !pub.Equal(cert.Leaf.PublicKey) {
				t.Error("private key does not match the leaf certificate")
			}
			switch cert.PrivateKey.(type) {
			case *rsa.PrivateKey:
				if tt.keyType != "rsa" {
					t.Errorf("key is RSA, want %s", tt.keyType)
				}
			case *ecdsa.PrivateKey:
				if tt.keyType != "ecdsa" {
					t.Errorf("key is ECDSA, want %s", tt.keyType)
				}
			}
			if len(cert.Certificate) != 2 {
				t.Fatalf("chain has %d certificates, want leaf and CA", len(cert.Certificate))
			}
			if ok, _ := x509.ParseCertificate(cert.Certificate[1]); ok == nil || !ok.Equal(ca) {
				t.Error("chain[1] is not the test CA")
			}
		})
	}
}

func TestDecodeKeystoreFailures(t *testing.T) {
	tests := []struct {
		name     string
		data     []byte
		password string
		code     jobs.Code
		contains string
	}{
		{"fail/wrong-password/openssl-p12", fixture(t, "client-openssl.p12"), wrongPassword, jobs.CodeKeystorePasswordWrong, "check the profile's password reference"},
		{"fail/wrong-password/openssl-legacy-p12", fixture(t, "client-openssl-legacy.p12"), wrongPassword, jobs.CodeKeystorePasswordWrong, "did not open with the configured password"},
		{"fail/wrong-password/keytool-p12", fixture(t, "client-keytool.p12"), wrongPassword, jobs.CodeKeystorePasswordWrong, "did not open with the configured password"},
		{"fail/wrong-password/keytool-jks", fixture(t, "client-keytool.jks"), wrongPassword, jobs.CodeKeystorePasswordWrong, "did not open with the configured password"},
		{"fail/wrong-password/multi-jks", fixture(t, "client-multi.jks"), wrongPassword, jobs.CodeKeystorePasswordWrong, "did not open with the configured password"},
		{"fail/wrong-password/encrypted-pem", fixture(t, "client-encrypted.pem"), wrongPassword, jobs.CodeKeystorePasswordWrong, "did not open with the configured password"},
		{"fail/wrong-password/legacy-encrypted-pem", fixture(t, "client-legacy-encrypted.pem"), wrongPassword, jobs.CodeKeystorePasswordWrong, "did not open with the configured password"},
		{"fail/no-password/p12", fixture(t, "client-openssl.p12"), "", jobs.CodeKeystorePasswordWrong, "did not open with the configured password"},
		{"fail/no-password/encrypted-pem", fixture(t, "client-encrypted.pem"), "", jobs.CodeKeystorePasswordWrong, "encrypted and the profile has no password"},
		{"fail/corrupt-p12", fixture(t, "corrupt.p12"), fixturePassword, jobs.CodeKeystoreInvalid, "truncated or corrupt"},
		{"fail/truncated-jks", fixture(t, "client-keytool.jks")[:700], fixturePassword, jobs.CodeKeystoreInvalid, "truncated or corrupt"},
		{"fail/empty", nil, fixturePassword, jobs.CodeKeystoreInvalid, "empty"},
		{"fail/garbage", []byte("\x01\x02\x03 this is not a keystore at all"), fixturePassword, jobs.CodeKeystoreInvalid, "neither PKCS#12 (DER), JKS nor PEM"},
		{"fail/base64-text-of-no-keystore", []byte(base64.StdEncoding.EncodeToString([]byte("plain text, not a keystore at all"))), fixturePassword, jobs.CodeKeystoreInvalid, "base64 text that does not decode to a keystore"},
		{"fail/base64-text/wrong-password", []byte(base64.StdEncoding.EncodeToString(fixture(t, "client-openssl.p12"))), wrongPassword, jobs.CodeKeystorePasswordWrong, "did not open with the configured password"},
		{"fail/jceks", []byte{0xCE, 0xCE, 0xCE, 0xCE, 0, 0, 0, 2}, fixturePassword, jobs.CodeKeystoreInvalid, "JCEKS"},
		{"fail/pem-key-without-cert", fixture(t, "ca.key"), "", jobs.CodeKeystoreInvalid, "no certificate for it"},
		{"fail/pem-without-blocks", []byte("-----BEGIN CERTIFICATE-----\nnot closed"), "", jobs.CodeKeystoreInvalid, "holds no certificate and no private key"},
		{"fail/pem-unsupported-key", []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"), "", jobs.CodeKeystoreInvalid, "not supported"},
		{"fail/pem-broken-cert", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "", jobs.CodeKeystoreInvalid, "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := secrets.DecodeKeystore(tt.data, []byte(tt.password))
			je := wantCode(t, err, tt.code)
			if !strings.Contains(je.Message, tt.contains) {
				t.Errorf("message %q does not say %q", je.Message, tt.contains)
			}
			if je.Retryable {
				t.Error("a keystore failure must not be retryable")
			}
		})
	}
}

func TestClientCertificateAlias(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		alias    string
		wantCN   string
		contains string // the error's message, when one is wanted
	}{
		{"ok/alias-alpha-p12", "client-multi.p12", "alpha", "mtlsrelay-test-alpha", ""},
		{"ok/alias-beta-p12", "client-multi.p12", "beta", "mtlsrelay-test-beta", ""},
		{"ok/alias-beta-jks", "client-multi.jks", "beta", "mtlsrelay-test-beta", ""},
		{"ok/alias-case-insensitive", "client-multi.p12", "BETA", "mtlsrelay-test-beta", ""},
		{"ok/alias-single", "client-openssl.p12", "mtlsrelay-test-client", "mtlsrelay-test-client", ""},
		{"fail/missing-alias-p12", "client-multi.p12", "gamma", "", `no entry with key_alias "gamma"; key entries: "alpha", "beta"`},
		{"fail/missing-alias-jks", "client-multi.jks", "gamma", "", `key entries: "alpha", "beta"`},
		{"fail/ambiguous", "client-multi.p12", "", "", `holds 2 key entries ("alpha", "beta"); set the profile's key_alias`},
		{"fail/truststore-as-keystore", "truststore.p12", "", "", "holds no private key"},
		{"fail/alias-is-trusted-cert", "truststore.jks", "mtlsrelay-test-ca", "", "names a trusted certificate entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := secrets.DecodeKeystore(fixture(t, tt.file), []byte(fixturePassword))
			if err != nil {
				t.Fatal(err)
			}
			cert, err := ks.ClientCertificate(tt.alias)
			if tt.contains != "" {
				je := wantCode(t, err, jobs.CodeKeystoreInvalid)
				if !strings.Contains(je.Message, tt.contains) {
					t.Errorf("message %q does not say %q", je.Message, tt.contains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cn := cert.Leaf.Subject.CommonName; cn != tt.wantCN {
				t.Errorf("CN = %q, want %q", cn, tt.wantCN)
			}
		})
	}
}

func TestDecodeTruststore(t *testing.T) {
	ca := pemCert(t, "ca.pem")
	tests := []struct {
		name     string
		file     string
		password string
		code     jobs.Code
	}{
		{"ok/pem", "ca.pem", "", ""},
		{"ok/pem-bundle-with-encrypted-key", "client-encrypted.pem", "", ""},
		{"ok/keytool-p12", "truststore.p12", fixturePassword, ""},
		{"ok/keytool-jks", "truststore.jks", fixturePassword, ""},
		{"ok/keytool-jks-without-password", "truststore.jks", "", ""},
		{"fail/wrong-password/p12", "truststore.p12", wrongPassword, jobs.CodeKeystorePasswordWrong},
		{"fail/wrong-password/jks", "truststore.jks", wrongPassword, jobs.CodeKeystorePasswordWrong},
		{"fail/keystore-as-truststore-jks", "client-keytool.jks", fixturePassword, jobs.CodeKeystoreInvalid},
		{"fail/keystore-as-truststore-p12", "client-openssl.p12", fixturePassword, jobs.CodeKeystoreInvalid},
		{"fail/corrupt", "corrupt.p12", fixturePassword, jobs.CodeKeystoreInvalid},
		{"fail/key-only-pem", "ca.key", "", jobs.CodeKeystoreInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, certs, err := secrets.DecodeTruststore(fixture(t, tt.file), []byte(tt.password))
			if tt.code != "" {
				wantCode(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(certs, ca.Equal) {
				t.Fatalf("truststore certificates %v do not include the test CA", certs)
			}
			leaf := pemCert(t, "server.pem")
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
				t.Errorf("server certificate does not verify against the pool: %v", err)
			}
		})
	}
}

func TestDecodeKeystoreTrustedOnly(t *testing.T) {
	for _, file := range []string{"truststore.p12", "truststore.jks", "ca.pem"} {
		t.Run("ok/"+file, func(t *testing.T) {
			ks, err := secrets.DecodeKeystore(fixture(t, file), []byte(fixturePassword))
			if err != nil {
				t.Fatal(err)
			}
			if len(ks.Entries) != 1 || ks.Entries[0].IsKey() || ks.Entries[0].Chain[0].Subject.CommonName != "mtlsrelay test CA" {
				t.Fatalf("entries = %+v, want one trusted CA", ks.Entries)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	ks, err := secrets.DecodeKeystore(fixture(t, "client-multi.jks"), []byte(fixturePassword))
	if err != nil {
		t.Fatal(err)
	}
	infos := secrets.Describe(ks)
	if len(infos) != 2 {
		t.Fatalf("got %d entries, want 2", len(infos))
	}
	beta := infos[1]
	cert, _ := ks.ClientCertificate("beta")
	want := secrets.EntryInfo{
		Alias: "beta", Kind: secrets.KindKey,
		Subject: "CN=mtlsrelay-test-beta,O=mtlsrelay tests", Issuer: "CN=mtlsrelay test CA,O=mtlsrelay tests",
		Serial: cert.Leaf.SerialNumber.Text(16), NotBefore: cert.Leaf.NotBefore, NotAfter: cert.Leaf.NotAfter,
		KeyAlgorithm: "ECDSA P-256", ChainLength: 2,
	}
	got := beta
	got.Chain = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Describe = %+v\nwant       %+v", got, want)
	}
	if len(beta.Chain) != 2 || beta.Chain[1].Subject != "CN=mtlsrelay test CA,O=mtlsrelay tests" {
		t.Errorf("chain = %+v", beta.Chain)
	}
	if infos[0].KeyAlgorithm != "RSA 2048" {
		t.Errorf("alpha key algorithm = %q", infos[0].KeyAlgorithm)
	}

	ts, err := secrets.DecodeKeystore(fixture(t, "truststore.jks"), []byte(fixturePassword))
	if err != nil {
		t.Fatal(err)
	}
	if info := secrets.Describe(ts); len(info) != 1 || info[0].Kind != secrets.KindTrustedCert || info[0].Alias != "mtlsrelay-test-ca" {
		t.Errorf("truststore Describe = %+v", info)
	}
}

// TestPEMKeyBeforeChain checks that the order of PEM blocks does not
// matter: people paste the key first as often as last.
func TestPEMKeyBeforeChain(t *testing.T) {
	ks, err := secrets.DecodeKeystore(fixture(t, "client-ec-sec1.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ks.ClientCertificate("")
	pkcs8DER, _ := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8DER})
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[1]})...)
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})...)
	ks, err = secrets.DecodeKeystore(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ks.ClientCertificate("")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Certificate) != 2 || got.Leaf.Subject.CommonName != "mtlsrelay-test-client-ec" {
		t.Errorf("chain of %d, leaf %s; want leaf first, then the CA", len(got.Certificate), got.Leaf.Subject)
	}
}

// Keystores kept in text stores (Vault KV, CyberArk, env) arrive as base64.
func TestDecodeKeystoreBase64Text(t *testing.T) {
	for _, file := range []string{"client-openssl.p12", "client-keytool.jks", "client-encrypted.pem"} {
		t.Run("ok/"+file, func(t *testing.T) {
			text := base64.StdEncoding.EncodeToString(fixture(t, file)) + "\n"
			ks, err := secrets.DecodeKeystore([]byte(text), []byte(fixturePassword))
			if err != nil {
				t.Fatalf("DecodeKeystore(base64 of %s): %v", file, err)
			}
			if _, err := ks.ClientCertificate(""); err != nil {
				t.Errorf("ClientCertificate: %v", err)
			}
		})
	}
}
