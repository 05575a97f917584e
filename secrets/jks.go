package secrets

import (
	"bytes"
	"crypto/x509"
	"strings"
	"unicode/utf8"

	"github.com/pavlo-v-chernykh/keystore-go/v4"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// decodeJKS decodes a Java KeyStore (keytool -storetype JKS). JKS has a
// store password, checked by the file's integrity digest, and a password per
// key entry; like most Java servers we open keys with the store password,
// which is what keytool sets unless told otherwise.
func decodeJKS(data, password []byte) (*Keystore, error) {
	return loadJKS(data, password, true)
}

// loadJKS reads a JKS keystore. With verify false and no password, the
// integrity digest is not checked, as Java does for a truststore loaded
// without a password; it is then only good for certificates.
func loadJKS(data, password []byte, verify bool) (*Keystore, error) {
	pw := jksPassword(password)
	ks := keystore.New(keystore.WithOrderedAliases(), keystore.WithCaseExactAliases())
	if err := ks.Load(bytes.NewReader(data), pw); err != nil {
		// keystore-go fills the store before it compares the digest, so a
		// digest mismatch leaves every entry readable.
		digestOnly := strings.Contains(err.Error(), "invalid digest")
		switch {
		case digestOnly && !verify && len(password) == 0:
		case digestOnly:
			return nil, jobs.Wrap(err, jobs.CodeKeystorePasswordWrong, msgPasswordWrong)
		default:
			return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid,
				"the JKS keystore is truncated or corrupt (it ends before its entries and digest do); copy the keystore again, in binary mode")
		}
	}
	out := &Keystore{Format: FormatJKS}
	for _, alias := range ks.Aliases() {
		if ks.IsTrustedCertificateEntry(alias) {
			tce, err := ks.GetTrustedCertificateEntry(alias)
			if err != nil {
				return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid, "the JKS keystore's entry %q could not be read; re-create it with keytool", alias)
			}
			c, err := parseJKSCert(alias, tce.Certificate)
			if err != nil {
				return nil, err
			}
			out.Entries = append(out.Entries, Entry{Alias: alias, Chain: []*x509.Certificate{c}})
			continue
		}
		chainRaw, err := ks.GetPrivateKeyEntryCertificateChain(alias)
		if err != nil {
			return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid, "the JKS keystore's entry %q could not be read; re-create it with keytool", alias)
		}
		if len(chainRaw) == 0 {
			return nil, jobs.Errorf(jobs.CodeKeystoreInvalid, "the JKS key entry %q has no certificate; import the signed certificate chain with keytool -importcert -alias %s", alias, alias)
		}
		chain := make([]*x509.Certificate, len(chainRaw))
		for i, cr := range chainRaw {
			if chain[i], err = parseJKSCert(alias, cr); err != nil {
				return nil, err
			}
		}
		if !verify {
			// A truststore loaded without a password lists key entries by
			// their certificate only; their keys are not needed.
			out.Entries = append(out.Entries, Entry{Alias: alias, Chain: chain[:1]})
			continue
		}
		pke, err := ks.GetPrivateKeyEntry(alias, pw)
		if err != nil {
			if strings.Contains(err.Error(), "invalid digest") {
				return nil, jobs.Wrap(err, jobs.CodeKeystorePasswordWrong,
					"the JKS key entry %q did not open with the keystore password; mtlsrelay opens JKS keys with the store password, so give the key the same password (keytool -keypasswd -alias %s)", alias, alias)
			}
			return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid,
				"the JKS key entry %q is protected with an algorithm this build does not read; convert the keystore with keytool -importkeystore -deststoretype pkcs12", alias)
		}
		key, err := parsePrivateKeyDER(pke.PrivateKey)
		clear(pke.PrivateKey)
		if err != nil {
			return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid, "the JKS key entry %q holds a private key that does not parse; re-create it with keytool", alias)
		}
		if !keyMatches(key, chain[0]) {
			return nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
				"the JKS key entry %q holds a certificate (%s) that does not match its private key; import the certificate issued for this key", alias, commonName(chain[0]))
		}
		out.Entries = append(out.Entries, Entry{Alias: alias, Chain: chain, Key: key})
	}
	return out, nil
}

// parseJKSCert parses one certificate of a JKS entry.
func parseJKSCert(alias string, c keystore.Certificate) (*x509.Certificate, error) {
	if c.Type != "X.509" {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid, "the JKS entry %q holds a %q certificate; only X.509 certificates are supported", alias, c.Type)
	}
	cert, err := x509.ParseCertificate(c.Content)
	if err != nil {
		return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid, "the JKS entry %q holds a certificate that does not parse; re-import it with keytool", alias)
	}
	return cert, nil
}

// jksPassword turns a UTF-8 password into the bytes keystore-go expects.
// Java hashes a password as UTF-16 code units and keystore-go widens each
// byte to one unit, so Latin-1 bytes are right for every character up to
// U+00FF; a password with later characters stays as it is and does not
// match, which is reported as a wrong password.
func jksPassword(pw []byte) []byte {
	if !utf8.Valid(pw) {
		return pw
	}
	out := make([]byte, 0, len(pw))
	for _, r := range string(pw) {
		if r > 0xFF {
			return pw
		}
		out = append(out, byte(r))
	}
	return out
}
