package wss

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	dsig "github.com/russellhaering/goxmldsig"
)

// Digest method URIs (XML Signature 1.0 and the xmlenc / xmldsig-more
// additions).
const (
	digestSHA1   = "http://www.w3.org/2000/09/xmldsig#sha1"
	digestSHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
	digestSHA384 = "http://www.w3.org/2001/04/xmldsig-more#sha384"
	digestSHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
)

// digestHash maps a DigestMethod URI to its hash; sha1 is reported
// separately so that Verify can refuse it unless allowed.
func digestHash(uri string) (h crypto.Hash, sha1 bool, ok bool) {
	switch uri {
	case digestSHA256:
		return crypto.SHA256, false, true
	case digestSHA384:
		return crypto.SHA384, false, true
	case digestSHA512:
		return crypto.SHA512, false, true
	case digestSHA1:
		return crypto.SHA1, true, true
	}
	return 0, false, false
}

// sigMethod is what a SignatureMethod URI means.
type sigMethod struct {
	key  x509.PublicKeyAlgorithm
	hash crypto.Hash
}

// signatureMethod maps a SignatureMethod URI to its key type and hash.
func signatureMethod(uri string) (sigMethod, bool) {
	switch uri {
	case dsig.RSASHA1SignatureMethod:
		return sigMethod{x509.RSA, crypto.SHA1}, true
	case dsig.RSASHA256SignatureMethod:
		return sigMethod{x509.RSA, crypto.SHA256}, true
	case dsig.RSASHA384SignatureMethod:
		return sigMethod{x509.RSA, crypto.SHA384}, true
	case dsig.RSASHA512SignatureMethod:
		return sigMethod{x509.RSA, crypto.SHA512}, true
	case dsig.ECDSASHA1SignatureMethod:
		return sigMethod{x509.ECDSA, crypto.SHA1}, true
	case dsig.ECDSASHA256SignatureMethod:
		return sigMethod{x509.ECDSA, crypto.SHA256}, true
	case dsig.ECDSASHA384SignatureMethod:
		return sigMethod{x509.ECDSA, crypto.SHA384}, true
	case dsig.ECDSASHA512SignatureMethod:
		return sigMethod{x509.ECDSA, crypto.SHA512}, true
	}
	return sigMethod{}, false
}

// signingMethod picks the SignatureMethod URI Sign uses for key: always
// SHA-256, which every WS-Security stack of the last decade verifies.
func signingMethod(pub crypto.PublicKey) (string, error) {
	switch pub.(type) {
	case *rsa.PublicKey:
		return dsig.RSASHA256SignatureMethod, nil
	case *ecdsa.PublicKey:
		return dsig.ECDSASHA256SignatureMethod, nil
	}
	return "", fmt.Errorf("wss: cannot sign with a %T key: only RSA and ECDSA keys are supported", pub)
}

// signDigest signs digest (a sum made with hash) with key and returns the
// SignatureValue bytes: PKCS #1 v1.5 for RSA, r||s for ECDSA.
func signDigest(key crypto.Signer, digest []byte, hash crypto.Hash) ([]byte, error) {
	sig, err := key.Sign(rand.Reader, digest, hash)
	if err != nil {
		return nil, fmt.Errorf("wss: signing failed: %w", err)
	}
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok {
		return sig, nil
	}
	// crypto.Signer returns ECDSA signatures in ASN.1 DER, but XML
	// Signature (RFC 4050/6931) wants the fixed-size concatenation r||s.
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(sig, &rs); err != nil || len(rest) != 0 {
		return nil, errors.New("wss: the ECDSA signer returned a signature that is not ASN.1 DER")
	}
	size := (pub.Curve.Params().BitSize + 7) / 8
	out := make([]byte, 2*size)
	rs.R.FillBytes(out[:size])
	rs.S.FillBytes(out[size:])
	return out, nil
}

// verifySignature checks sig over signed with pub for method m. An ECDSA
// sig must be r||s of the curve's size.
func verifySignature(pub crypto.PublicKey, m sigMethod, signed, sig []byte) error {
	h := m.hash.New()
	h.Write(signed)
	sum := h.Sum(nil)
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if m.key != x509.RSA {
			return errors.New("the SignatureMethod is ECDSA but the certificate's key is RSA")
		}
		if err := rsa.VerifyPKCS1v15(k, m.hash, sum, sig); err != nil {
			return errors.New("the SignatureValue does not verify with the certificate's key")
		}
		return nil
	case *ecdsa.PublicKey:
		if m.key != x509.ECDSA {
			return errors.New("the SignatureMethod is RSA but the certificate's key is ECDSA")
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return fmt.Errorf("the ECDSA SignatureValue has %d bytes, want %d (r||s; ASN.1 DER is not XML Signature's form)", len(sig), 2*size)
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(k, sum, r, s) {
			return errors.New("the SignatureValue does not verify with the certificate's key")
		}
		return nil
	}
	return fmt.Errorf("the certificate's %T key is not supported (RSA and ECDSA are)", pub)
}
