package secrets

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"time"
)

// Entry kinds reported by Describe.
const (
	KindKey         = "key"
	KindTrustedCert = "trusted-cert"
)

// EntryInfo describes one keystore entry for people: what `mtlsrelay
// keystore inspect` prints. It holds no key material.
type EntryInfo struct {
	// Alias is the entry's alias (see Entry.Alias).
	Alias string `json:"alias"`
	// Kind is KindKey or KindTrustedCert.
	Kind string `json:"kind"`
	// Subject and Issuer are the leaf certificate's names, RFC 2253 style.
	Subject string `json:"subject"`
	Issuer  string `json:"issuer"`
	// Serial is the leaf's serial number in lowercase hex.
	Serial string `json:"serial"`
	// NotBefore and NotAfter bound the leaf's validity.
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// KeyAlgorithm is the leaf's key type and size, e.g. "RSA 2048" or
	// "ECDSA P-256".
	KeyAlgorithm string `json:"key_algorithm"`
	// ChainLength is the number of certificates in the entry.
	ChainLength int `json:"chain_length"`
	// Chain describes each certificate of the entry, leaf first.
	Chain []CertInfo `json:"chain"`
}

// CertInfo describes one certificate of an entry's chain.
type CertInfo struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// Describe lists the entries of ks, in order, for display.
func Describe(ks *Keystore) []EntryInfo {
	out := make([]EntryInfo, 0, len(ks.Entries))
	for _, e := range ks.Entries {
		if len(e.Chain) == 0 {
			continue
		}
		leaf := e.Chain[0]
		info := EntryInfo{
			Alias:        e.Alias,
			Kind:         KindTrustedCert,
			Subject:      leaf.Subject.String(),
			Issuer:       leaf.Issuer.String(),
			Serial:       SerialHex(leaf),
			NotBefore:    leaf.NotBefore,
			NotAfter:     leaf.NotAfter,
			KeyAlgorithm: keyAlgorithm(leaf.PublicKey),
			ChainLength:  len(e.Chain),
		}
		if e.IsKey() {
			info.Kind = KindKey
		}
		for _, c := range e.Chain {
			info.Chain = append(info.Chain, CertInfo{
				Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: SerialHex(c),
				NotBefore: c.NotBefore, NotAfter: c.NotAfter,
			})
		}
		out = append(out, info)
	}
	return out
}

// SerialHex renders a certificate's serial number as lowercase hex, the
// form used in results and logs.
func SerialHex(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

// keyAlgorithm names the type and size of a public or private key.
func keyAlgorithm(k any) string {
	if s, ok := k.(crypto.Signer); ok {
		k = s.Public()
	}
	switch k := k.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case nil:
		return "none"
	}
	return fmt.Sprintf("%T", k)
}
