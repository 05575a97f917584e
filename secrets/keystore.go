package secrets

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// The keystore formats DecodeKeystore detects, as found in Keystore.Format.
const (
	FormatPKCS12 = "pkcs12"
	FormatJKS    = "jks"
	FormatPEM    = "pem"
)

// Magic numbers of Java's own keystore formats.
const (
	jksMagic   = 0xFEEDFEED
	jceksMagic = 0xCECECECE
)

// formatNames are the formats as people write them, for messages.
var formatNames = map[string]string{FormatPKCS12: "PKCS#12", FormatJKS: "JKS", FormatPEM: "PEM"}

// msgPasswordWrong is the message of every wrong-password error, so a
// person sees the same advice whatever the format.
const msgPasswordWrong = "the keystore did not open with the configured password; check the profile's password reference"

// Keystore is a decoded keystore: its format and its entries, in the order
// the file holds them.
type Keystore struct {
	// Format is FormatPKCS12, FormatJKS or FormatPEM.
	Format string
	// Entries are the key entries and trusted certificate entries.
	Entries []Entry
}

// Entry is one entry of a keystore.
type Entry struct {
	// Alias names the entry: the PKCS#12 friendlyName, the JKS alias, or for
	// PEM (which has no aliases) the leaf certificate's common name.
	Alias string
	// Chain is the certificate chain, leaf first. A trusted certificate
	// entry has exactly one certificate.
	Chain []*x509.Certificate
	// Key is the private key of a key entry, nil for a trusted certificate.
	Key crypto.PrivateKey
}

// IsKey reports whether e is a key entry.
func (e Entry) IsKey() bool { return e.Key != nil }

// DecodeKeystore decodes a PKCS#12, JKS or PEM keystore, detecting the
// format from the data: the JKS magic 0xFEEDFEED, PEM text, else PKCS#12 DER.
//
// A wrong password fails with jobs.CodeKeystorePasswordWrong; data that is
// not a keystore, is truncated or corrupt, or holds a key without its
// certificate fails with jobs.CodeKeystoreInvalid. A keystore that holds
// only trusted certificates decodes (keystore inspect lists truststores
// too); ClientCertificate is where a missing key is reported.
func DecodeKeystore(data []byte, password []byte) (*Keystore, error) {
	switch detectFormat(data) {
	case FormatJKS:
		return decodeJKS(data, password)
	case FormatPEM:
		return decodePEM(data, password)
	case FormatPKCS12:
		return decodePKCS12(data, password)
	}
	// Keystores kept in text stores (a Vault KV field, CyberArk's Content,
	// an environment variable) are base64 text: decode it once and look again.
	if looksBase64(data) {
		if raw, err := decodeBase64(strings.TrimSpace(string(data))); err == nil && detectFormat(raw) != "" {
			return DecodeKeystore(raw, password)
		}
	}
	return nil, notAKeystore(data)
}

// detectFormat names the format data is in, or "" when it is none of them.
func detectFormat(data []byte) string {
	switch {
	case len(data) >= 4 && binary.BigEndian.Uint32(data) == jksMagic:
		return FormatJKS
	case bytes.Contains(data, []byte("-----BEGIN ")):
		return FormatPEM
	case len(data) > 0 && data[0] == 0x30: // a DER SEQUENCE
		return FormatPKCS12
	}
	return ""
}

// notAKeystore explains what data is instead, without printing any of it.
func notAKeystore(data []byte) *jobs.Error {
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return jobs.Errorf(jobs.CodeKeystoreInvalid, "the keystore is empty (%d bytes); check that the reference names the keystore file or field", len(data))
	case len(data) >= 4 && binary.BigEndian.Uint32(data) == jceksMagic:
		return jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the keystore is a JCEKS keystore, which is not supported; convert it with keytool -importkeystore -deststoretype pkcs12")
	case looksBase64(data):
		return jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the keystore (%d bytes) is base64 text that does not decode to a keystore; check that the reference names the keystore field", len(data))
	}
	return jobs.Errorf(jobs.CodeKeystoreInvalid,
		"the data (%d bytes) is not a keystore: it is neither PKCS#12 (DER), JKS nor PEM; check that the reference names the keystore", len(data))
}

// looksBase64 reports whether data is base64 text, a common mix-up when a
// keystore is copied out of a secret manager.
func looksBase64(data []byte) bool {
	s := strings.TrimSpace(string(data))
	if len(s) < 16 {
		return false
	}
	_, err := decodeBase64(s)
	return err == nil
}

// ClientCertificate returns the key entry to present as the TLS client
// certificate, with Leaf set. With alias "" it is the keystore's only key
// entry; with several the error lists their aliases. Otherwise it is the
// key entry of that alias, compared case-insensitively as Java does; when
// absent the error lists the aliases there are. Errors carry
// jobs.CodeKeystoreInvalid.
func (ks *Keystore) ClientCertificate(alias string) (tls.Certificate, error) {
	var keys []Entry
	for _, e := range ks.Entries {
		if e.IsKey() {
			keys = append(keys, e)
		}
	}
	var chosen Entry
	switch {
	case alias == "" && len(keys) == 0:
		return tls.Certificate{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the %s keystore holds no private key (it has %d trusted certificate entries: %s); a client keystore needs a key entry: is this the truststore?",
			formatNames[ks.Format], len(ks.Entries), aliasList(ks.Entries))
	case alias == "" && len(keys) > 1:
		return tls.Certificate{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the %s keystore holds %d key entries (%s); set the profile's key_alias to the one to use",
			formatNames[ks.Format], len(keys), aliasList(keys))
	case alias == "":
		chosen = keys[0]
	default:
		found := false
		for _, e := range ks.Entries {
			if strings.EqualFold(e.Alias, alias) {
				if !e.IsKey() {
					return tls.Certificate{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
						"key_alias %q names a trusted certificate entry, which has no private key; key entries: %s", alias, aliasList(keys))
				}
				chosen, found = e, true
				break
			}
		}
		if !found {
			return tls.Certificate{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
				"the %s keystore has no entry with key_alias %q; key entries: %s", formatNames[ks.Format], alias, aliasList(keys))
		}
	}
	if err := checkTLSKey(chosen.Key); err != nil {
		return tls.Certificate{}, err
	}
	raw := make([][]byte, len(chosen.Chain))
	for i, c := range chosen.Chain {
		raw[i] = c.Raw
	}
	return tls.Certificate{Certificate: raw, PrivateKey: chosen.Key, Leaf: chosen.Chain[0]}, nil
}

// aliasList renders the aliases of entries for a message.
func aliasList(entries []Entry) string {
	if len(entries) == 0 {
		return "none"
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = fmt.Sprintf("%q", e.Alias)
	}
	return strings.Join(names, ", ")
}

// checkTLSKey rejects key types crypto/tls cannot sign with, so the failure
// names the key rather than surfacing mid-handshake.
func checkTLSKey(k crypto.PrivateKey) error {
	switch k.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		return nil
	}
	return jobs.Errorf(jobs.CodeKeystoreInvalid,
		"the key entry's private key (%s) cannot be used for TLS client authentication; use an RSA, ECDSA or Ed25519 key", keyAlgorithm(k))
}

// keyItem and certItem are the loose parts PKCS#12 and PEM files hold,
// before they are paired into entries.
type keyItem struct {
	alias      string
	localKeyID string
	key        crypto.PrivateKey
}

type certItem struct {
	alias      string
	localKeyID string
	cert       *x509.Certificate
}

// assembleEntries pairs each key with its certificate (by localKeyId when
// the file has one, else by public key), completes each chain from the other
// certificates, and keeps the certificates no chain used as trusted
// certificate entries.
func assembleEntries(format string, keys []keyItem, certs []certItem) ([]Entry, error) {
	certs = dedupCerts(certs)
	used := make([]bool, len(certs))
	var entries []Entry
	for _, k := range keys {
		leaf := -1
		if k.localKeyID != "" {
			for i, c := range certs {
				if c.localKeyID == k.localKeyID && keyMatches(k.key, c.cert) {
					leaf = i
					break
				}
			}
		}
		if leaf < 0 {
			for i, c := range certs {
				if keyMatches(k.key, c.cert) {
					leaf = i
					break
				}
			}
		}
		if leaf < 0 {
			return nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
				"the %s keystore holds a private key (%s) but no certificate for it; add the client certificate next to its key",
				formatNames[format], keyAlgorithm(k.key))
		}
		used[leaf] = true
		chain := []*x509.Certificate{certs[leaf].cert}
		for {
			next := issuerOf(chain[len(chain)-1], certs, chain)
			if next < 0 {
				break
			}
			used[next] = true
			chain = append(chain, certs[next].cert)
		}
		alias := k.alias
		if alias == "" {
			alias = certs[leaf].alias
		}
		if alias == "" {
			alias = commonName(chain[0])
		}
		entries = append(entries, Entry{Alias: alias, Chain: chain, Key: k.key})
	}
	for i, c := range certs {
		if used[i] {
			continue
		}
		alias := c.alias
		if alias == "" {
			alias = commonName(c.cert)
		}
		entries = append(entries, Entry{Alias: alias, Chain: []*x509.Certificate{c.cert}})
	}
	return entries, nil
}

// dedupCerts drops repeated certificates: keytool writes a CA once per chain.
func dedupCerts(certs []certItem) []certItem {
	out := certs[:0:0]
	for _, c := range certs {
		dup := false
		for _, o := range out {
			if o.cert.Equal(c.cert) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}

// issuerOf returns the index of the certificate in certs that issued c and
// is not yet in chain, or -1 when c is self-signed or its issuer is absent.
func issuerOf(c *x509.Certificate, certs []certItem, chain []*x509.Certificate) int {
	if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
		return -1
	}
	for i, cand := range certs {
		inChain := false
		for _, have := range chain {
			if have.Equal(cand.cert) {
				inChain = true
				break
			}
		}
		if inChain || !bytes.Equal(c.RawIssuer, cand.cert.RawSubject) {
			continue
		}
		if c.CheckSignatureFrom(cand.cert) == nil {
			return i
		}
	}
	return -1
}

// keyMatches reports whether cert carries the public half of key.
func keyMatches(key crypto.PrivateKey, cert *x509.Certificate) bool {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return false
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// commonName names a certificate for aliases and messages.
func commonName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// parsePrivateKeyDER parses an unencrypted private key in PKCS#8, PKCS#1 or
// SEC1 form, whichever it is.
func parsePrivateKeyDER(der []byte) (crypto.PrivateKey, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, err
	}
	return k, nil
}
