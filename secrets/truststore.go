package secrets

import (
	"crypto/x509"
	"encoding/pem"
	"strings"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// DecodeTruststore decodes the certificates a profile trusts for the
// server's chain: a PEM bundle of certificates, a PKCS#12 truststore (the
// trusted certificate bags keytool writes), or the trusted certificate
// entries of a JKS keystore. It returns them as a pool and as a list.
//
// A password may be empty: a PKCS#12 truststore is then opened as Java does
// with an empty password, and a JKS one is read without checking its
// integrity digest, as Java does when no password is given.
func DecodeTruststore(data, password []byte) (*x509.CertPool, []*x509.Certificate, error) {
	var certs []*x509.Certificate
	switch detectFormat(data) {
	case FormatPEM:
		var err error
		if certs, err = pemCertificates(data); err != nil {
			return nil, nil, err
		}
	case FormatJKS:
		ks, err := loadJKS(data, password, len(password) > 0)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range ks.Entries {
			if !e.IsKey() && len(e.Chain) == 1 {
				certs = append(certs, e.Chain[0])
			}
		}
		if len(certs) == 0 {
			return nil, nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
				"the JKS truststore holds no trusted certificate entry (it has %d key entries: %s); is this the keystore rather than the truststore?",
				len(ks.Entries), aliasList(ks.Entries))
		}
	case FormatPKCS12:
		var err error
		if certs, err = decodePKCS12Truststore(data, password); err != nil {
			return nil, nil, err
		}
	default:
		// A truststore kept in a text store (a Vault KV field, say) is
		// base64 text, as DecodeKeystore accepts.
		if looksBase64(data) {
			if raw, err := decodeBase64(strings.TrimSpace(string(data))); err == nil && detectFormat(raw) != "" {
				return DecodeTruststore(raw, password)
			}
		}
		return nil, nil, notAKeystore(data)
	}
	if len(certs) == 0 {
		return nil, nil, jobs.Errorf(jobs.CodeKeystoreInvalid, "the truststore holds no certificate; put the server's CA certificate in it")
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, certs, nil
}

// decodePKCS12Truststore reads the trusted certificates of a PKCS#12 file:
// keytool's trusted certificate bags, or the certificates of a keystore that
// belong to no key entry. A key entry's chain is not trusted: Java does not
// trust it either.
func decodePKCS12Truststore(data, password []byte) ([]*x509.Certificate, error) {
	certs, err := pkcs12.DecodeTrustStore(data, string(password))
	if err == nil {
		return certs, nil
	}
	if e := pkcs12Fatal(err); e != nil {
		return nil, e
	}
	ks, kerr := decodePKCS12(data, password)
	if kerr != nil {
		return nil, kerr
	}
	for _, e := range ks.Entries {
		if !e.IsKey() {
			certs = append(certs, e.Chain[0])
		}
	}
	if len(certs) == 0 {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the PKCS#12 truststore holds no CA certificate (only %d key entries: %s); is this the keystore rather than the truststore?",
			len(ks.Entries), aliasList(ks.Entries))
	}
	return certs, nil
}

// pemCertificates returns every certificate of a PEM bundle. Other blocks,
// keys included, are ignored: a truststore needs no key, and a bundle
// shared with a keystore may hold one that is encrypted.
func pemCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" && b.Type != "TRUSTED CERTIFICATE" {
			continue
		}
		c, err := parsePEMCert(b)
		if err != nil {
			return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid,
				"PEM block #%d (%s) of the truststore does not parse as an X.509 certificate; check that it was copied whole", n, b.Type)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the PEM truststore holds no -----BEGIN CERTIFICATE----- block; put the server's CA certificate in it")
	}
	return certs, nil
}
