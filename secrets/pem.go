package secrets

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/youmark/pkcs8"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// decodePEM decodes a PEM bundle: certificates (leaf, intermediates, CAs in
// any order) and private keys in PKCS#8 ("PRIVATE KEY"), encrypted PKCS#8
// ("ENCRYPTED PRIVATE KEY", PBES2 as openssl pkcs8 -topk8 -v2 writes),
// PKCS#1 ("RSA PRIVATE KEY") or SEC1 ("EC PRIVATE KEY") form, the last two
// possibly with the legacy "Proc-Type: 4,ENCRYPTED" header. PEM has no
// aliases: each entry is named after its leaf certificate's common name.
func decodePEM(data, password []byte) (*Keystore, error) {
	var keys []keyItem
	var certs []certItem
	skipped := map[string]bool{}
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE", "TRUSTED CERTIFICATE":
			c, err := parsePEMCert(b)
			if err != nil {
				return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid,
					"PEM block #%d (%s) does not parse as an X.509 certificate; check that it was copied whole", n, b.Type)
			}
			certs = append(certs, certItem{cert: c})
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			k, err := parsePEMKey(n, b, password)
			if err != nil {
				return nil, err
			}
			keys = append(keys, keyItem{key: k})
		default:
			if strings.HasSuffix(b.Type, "PRIVATE KEY") {
				return nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
					"PEM block #%d is a %q, which is not supported; convert the key to PKCS#8 with openssl pkcs8 -topk8", n, b.Type)
			}
			// Parameters, CSRs and public keys are harmless company.
			skipped[b.Type] = true
		}
	}
	if len(keys) == 0 && len(certs) == 0 {
		found := "no complete PEM block"
		if len(skipped) > 0 {
			types := make([]string, 0, len(skipped))
			for t := range skipped {
				types = append(types, fmt.Sprintf("%q", t))
			}
			sort.Strings(types)
			found = "only " + strings.Join(types, ", ") + " blocks"
		}
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the PEM data holds no certificate and no private key (found %s); a PEM keystore needs -----BEGIN CERTIFICATE----- and -----BEGIN PRIVATE KEY----- blocks", found)
	}
	entries, err := assembleEntries(FormatPEM, keys, certs)
	if err != nil {
		return nil, err
	}
	return &Keystore{Format: FormatPEM, Entries: entries}, nil
}

// parsePEMCert parses a certificate block. OpenSSL's "TRUSTED CERTIFICATE"
// appends its trust settings after the certificate, so only the first DER
// element is the certificate.
func parsePEMCert(b *pem.Block) (*x509.Certificate, error) {
	der := b.Bytes
	if b.Type == "TRUSTED CERTIFICATE" {
		var first asn1.RawValue
		if _, err := asn1.Unmarshal(der, &first); err != nil {
			return nil, err
		}
		der = first.FullBytes
	}
	return x509.ParseCertificate(der)
}

// parsePEMKey decrypts if need be and parses the n-th block, a private key.
func parsePEMKey(n int, b *pem.Block, password []byte) (crypto.PrivateKey, error) {
	der := b.Bytes
	//lint:ignore SA1019 legacy PEM encryption (RFC 1423) is still what old tools write; reading it is the point
	encrypted := b.Type == "ENCRYPTED PRIVATE KEY" || x509.IsEncryptedPEMBlock(b)
	if encrypted && len(password) == 0 {
		return nil, jobs.Errorf(jobs.CodeKeystorePasswordWrong,
			"the PEM private key (block #%d) is encrypted and the profile has no password; set the profile's password reference", n)
	}
	switch {
	case b.Type == "ENCRYPTED PRIVATE KEY":
		k, err := pkcs8.ParsePKCS8PrivateKey(der, password)
		if err != nil {
			if strings.Contains(err.Error(), "incorrect password") {
				return nil, jobs.Wrap(err, jobs.CodeKeystorePasswordWrong, msgPasswordWrong)
			}
			return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid,
				"the encrypted PEM private key (block #%d) uses an encryption this build does not read (%s); re-encrypt it with openssl pkcs8 -topk8 -v2 aes-256-cbc",
				n, strings.TrimPrefix(err.Error(), "pkcs8: "))
		}
		return k, nil
	case encrypted:
		//lint:ignore SA1019 see IsEncryptedPEMBlock above
		plain, err := x509.DecryptPEMBlock(b, password)
		if err != nil {
			if errors.Is(err, x509.IncorrectPasswordError) {
				return nil, jobs.Wrap(err, jobs.CodeKeystorePasswordWrong, msgPasswordWrong)
			}
			return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid,
				"the encrypted PEM private key (block #%d) could not be decrypted (unknown cipher or damaged header); re-encrypt it with openssl pkcs8 -topk8 -v2 aes-256-cbc", n)
		}
		der = plain
		defer clear(plain)
	}
	k, err := parsePrivateKeyDER(der)
	if err != nil {
		if encrypted {
			// Legacy PEM encryption has no integrity check: a wrong
			// password usually shows as padding, but may decrypt to junk.
			return nil, jobs.Wrap(err, jobs.CodeKeystorePasswordWrong, msgPasswordWrong)
		}
		return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid,
			"PEM block #%d (%s) does not parse as a private key; check that it was copied whole", n, b.Type)
	}
	return k, nil
}
