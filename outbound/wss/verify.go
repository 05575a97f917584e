package wss

import (
	"crypto"
	"crypto/hmac"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/beevik/etree"
)

// VerifyOptions says what Verify accepts.
type VerifyOptions struct {
	// Roots are the CAs the signer's certificate must chain to; nil means
	// the system roots.
	Roots *x509.CertPool
	// Intermediates are extra certificates to build the chain with;
	// optional.
	Intermediates *x509.CertPool
	// Now returns the time; nil means time.Now.
	Now func() time.Time
	// Skew is the clock skew tolerated for the Timestamp's Created and
	// Expires. Default 60s.
	Skew time.Duration
	// AllowSHA1 accepts sha1 digests and rsa-sha1 / ecdsa-sha1
	// signatures, which partners on WCF's Basic256 suite or old WSS4J
	// defaults still send. Off by default: SHA-1 is broken for collisions.
	AllowSHA1 bool
}

// defaultSkew is VerifyOptions.Skew when zero.
const defaultSkew = 60 * time.Second

// Verify checks the WS-Security signature of a response envelope and
// returns the signer's certificate. It requires exactly one wsse:Security
// header holding a ds:Signature whose references cover the envelope's own
// soap:Body (ids must be unique in the document, so a Body copied
// elsewhere cannot stand in for it) and the wsu:Timestamp, which the
// header must have, with Created and Expires at most
// MaxTimestampLifetime apart, not expired and not created in the future.
// The envelope must be within MaxElements, MaxNamespaceDecls and
// MaxDepth, checked before any canonicalization. The
// certificate comes from the wsse:BinarySecurityToken that KeyInfo's
// SecurityTokenReference points to, or from an X509Data/X509Certificate in
// KeyInfo; it must be valid now and chain to opts.Roots. Only exclusive
// c14n is accepted; the algorithms are listed in the package doc.
func Verify(envelope []byte, opts VerifyOptions) (*x509.Certificate, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	skew := opts.Skew
	if skew <= 0 {
		skew = defaultSkew
	}
	env, err := parseEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	secs := childrenNamed(env.header, wsseNS, tagSecurity)
	switch len(secs) {
	case 0:
		return nil, errors.New("wss: the response has no wsse:Security header: the partner did not sign it")
	case 1:
	default:
		return nil, fmt.Errorf("wss: the response has %d wsse:Security headers; want exactly one", len(secs))
	}
	sec := secs[0]
	sigEl, err := oneChild(sec, dsNS, "Signature", "ds:Signature in wsse:Security")
	if err != nil {
		return nil, err
	}
	if sigEl == nil {
		return nil, errors.New("wss: the wsse:Security header has no ds:Signature")
	}
	ts, err := oneChild(sec, wsuNS, tagTimestamp, "wsu:Timestamp in wsse:Security")
	if err != nil {
		return nil, err
	}

	// Every id must name one element only: otherwise what the signature
	// covers and what the application reads could be two different
	// elements (XML signature wrapping).
	ids := indexIDs(env.root)
	if ids.dup != "" {
		return nil, fmt.Errorf("wss: the id %q appears more than once in the envelope (possible signature wrapping)", truncate(ids.dup, 60))
	}

	sig, err := parseSignature(sigEl)
	if err != nil {
		return nil, err
	}
	m, _ := signatureMethod(sig.method)
	if m.hash == crypto.SHA1 && !opts.AllowSHA1 {
		return nil, fmt.Errorf("wss: the signature uses SHA-1 (%s), which is refused; set AllowSHA1 for a legacy partner", sig.method)
	}

	certs, err := keyInfoCerts(sig.keyInfo, ids)
	if err != nil {
		return nil, err
	}
	signer, err := findSigner(certs, m, sig)
	if err != nil {
		return nil, err
	}

	// The signature over SignedInfo holds; now check that what it
	// references is what the envelope says.
	covered := map[*etree.Element]bool{}
	for _, r := range sig.refs {
		el, err := r.check(ids, opts.AllowSHA1)
		if err != nil {
			return nil, err
		}
		covered[el] = true
	}
	if !covered[env.body] {
		return nil, errors.New("wss: the signature does not cover the envelope's soap:Body")
	}
	// A signed Timestamp is what keeps an old signed response from being
	// replayed: without one a signature verifies forever.
	if ts == nil {
		return nil, errors.New("wss: the wsse:Security header has no wsu:Timestamp; a signed Timestamp with Created and Expires is required (against replays)")
	}
	if !covered[ts] {
		return nil, errors.New("wss: the wsu:Timestamp is not covered by the signature")
	}
	if err := checkTimestamp(ts, now(), skew); err != nil {
		return nil, err
	}

	if err := checkCertificate(signer, certs, opts, now()); err != nil {
		return nil, err
	}
	return signer, nil
}

// findSigner returns the certificate among certs whose key verifies the
// SignatureValue. KeyInfo may carry a chain in any order, so each is tried.
func findSigner(certs []*x509.Certificate, m sigMethod, sig *signature) (*x509.Certificate, error) {
	var first error
	for _, c := range certs {
		err := verifySignature(c.PublicKey, m, sig.signedInfo, sig.value)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, fmt.Errorf("wss: %v", first)
}

// checkCertificate checks that the signer is valid at now, may sign and
// chains to the roots; other certificates from KeyInfo help build the
// chain but are not trusted by themselves.
func checkCertificate(signer *x509.Certificate, certs []*x509.Certificate, opts VerifyOptions, now time.Time) error {
	if signer.KeyUsage != 0 && signer.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return fmt.Errorf("wss: the signing certificate %q does not allow digital signatures (key usage)", signer.Subject.CommonName)
	}
	inter := x509.NewCertPool()
	if opts.Intermediates != nil {
		inter = opts.Intermediates.Clone()
	}
	for _, c := range certs {
		if c != signer {
			inter.AddCert(c)
		}
	}
	_, err := signer.Verify(x509.VerifyOptions{
		Roots:         opts.Roots,
		Intermediates: inter,
		CurrentTime:   now,
		// Partners' signing certificates carry whatever extended key
		// usages their CA gives; the chain to the configured roots is
		// what establishes trust.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("wss: the signing certificate %q (serial %s) is not trusted: %v", signer.Subject.CommonName, signer.SerialNumber.Text(16), err)
	}
	return nil
}

// signature is a parsed ds:Signature.
type signature struct {
	method     string
	signedInfo []byte // canonical SignedInfo, what SignatureValue signs
	value      []byte
	refs       []reference
	keyInfo    *etree.Element
}

// reference is a parsed ds:Reference.
type reference struct {
	uri        string
	prefixList string
	digest     string
	value      []byte
}

// parseSignature reads a ds:Signature, insisting on the shape XML
// Signature gives it: one SignedInfo, one SignatureValue, at most one
// KeyInfo.
func parseSignature(sigEl *etree.Element) (*signature, error) {
	si, err := oneChild(sigEl, dsNS, "SignedInfo", "ds:SignedInfo")
	if err != nil {
		return nil, err
	}
	sv, err := oneChild(sigEl, dsNS, "SignatureValue", "ds:SignatureValue")
	if err != nil {
		return nil, err
	}
	ki, err := oneChild(sigEl, dsNS, "KeyInfo", "ds:KeyInfo")
	if err != nil {
		return nil, err
	}
	if si == nil || sv == nil {
		return nil, errors.New("wss: the ds:Signature lacks SignedInfo or SignatureValue")
	}
	if ki == nil {
		return nil, errors.New("wss: the ds:Signature has no KeyInfo to find the signer's certificate by")
	}
	cm, err := oneChild(si, dsNS, "CanonicalizationMethod", "ds:CanonicalizationMethod")
	if err != nil {
		return nil, err
	}
	if cm == nil {
		return nil, errors.New("wss: SignedInfo has no CanonicalizationMethod")
	}
	prefixList, err := excC14NPrefixList(cm, "SignedInfo's CanonicalizationMethod")
	if err != nil {
		return nil, err
	}
	sm, err := oneChild(si, dsNS, "SignatureMethod", "ds:SignatureMethod")
	if err != nil {
		return nil, err
	}
	if sm == nil {
		return nil, errors.New("wss: SignedInfo has no SignatureMethod")
	}
	method := sm.SelectAttrValue("Algorithm", "")
	if _, ok := signatureMethod(method); !ok {
		return nil, fmt.Errorf("wss: unsupported SignatureMethod %q (want rsa-sha256/384/512 or ecdsa-sha256/384/512)", truncate(method, 80))
	}
	canon, err := canonicalize(si, prefixList)
	if err != nil {
		return nil, fmt.Errorf("wss: canonicalize SignedInfo: %v", err)
	}
	value, err := decodeBase64(sv.Text())
	if err != nil {
		return nil, errors.New("wss: the SignatureValue is not base64")
	}
	s := &signature{method: method, signedInfo: canon, value: value, keyInfo: ki}
	for _, r := range childrenNamed(si, dsNS, "Reference") {
		ref, err := parseReference(r)
		if err != nil {
			return nil, err
		}
		s.refs = append(s.refs, ref)
	}
	if len(s.refs) == 0 {
		return nil, errors.New("wss: SignedInfo has no Reference")
	}
	return s, nil
}

// parseReference reads a ds:Reference: a same-document "#id" URI, exactly
// one transform (exclusive c14n), a digest method and value.
func parseReference(r *etree.Element) (reference, error) {
	uri := r.SelectAttrValue("URI", "")
	if !strings.HasPrefix(uri, "#") || len(uri) < 2 {
		return reference{}, fmt.Errorf("wss: Reference URI %q is not a same-document \"#id\" reference", truncate(uri, 80))
	}
	ref := reference{uri: uri}
	tss, err := oneChild(r, dsNS, "Transforms", "ds:Transforms")
	if err != nil {
		return reference{}, err
	}
	var transforms []*etree.Element
	if tss != nil {
		transforms = childrenNamed(tss, dsNS, "Transform")
	}
	if len(transforms) != 1 {
		return reference{}, fmt.Errorf("wss: Reference %s has %d transforms; want exactly one, exclusive c14n", truncate(uri, 80), len(transforms))
	}
	if ref.prefixList, err = excC14NPrefixList(transforms[0], "the transform of Reference "+truncate(uri, 80)); err != nil {
		return reference{}, err
	}
	dm, err := oneChild(r, dsNS, "DigestMethod", "ds:DigestMethod")
	if err != nil {
		return reference{}, err
	}
	dv, err := oneChild(r, dsNS, "DigestValue", "ds:DigestValue")
	if err != nil {
		return reference{}, err
	}
	if dm == nil || dv == nil {
		return reference{}, fmt.Errorf("wss: Reference %s lacks DigestMethod or DigestValue", truncate(uri, 80))
	}
	ref.digest = dm.SelectAttrValue("Algorithm", "")
	if ref.value, err = decodeBase64(dv.Text()); err != nil {
		return reference{}, fmt.Errorf("wss: the DigestValue of Reference %s is not base64", truncate(uri, 80))
	}
	return ref, nil
}

// excC14NPrefixList checks that el's Algorithm is exclusive c14n and
// returns its InclusiveNamespaces PrefixList, if any.
func excC14NPrefixList(el *etree.Element, what string) (string, error) {
	if alg := el.SelectAttrValue("Algorithm", ""); alg != excC14N {
		return "", fmt.Errorf("wss: %s is %q; only exclusive c14n (%s) is accepted", what, truncate(alg, 80), excC14N)
	}
	inc, err := oneChild(el, excC14N, "InclusiveNamespaces", "ec:InclusiveNamespaces")
	if err != nil || inc == nil {
		return "", err
	}
	return inc.SelectAttrValue("PrefixList", ""), nil
}

// check resolves the reference by id, recomputes its digest and compares.
// It returns the referenced element.
func (r reference) check(ids *idIndex, allowSHA1 bool) (*etree.Element, error) {
	id := r.uri[1:]
	el := ids.byID[id]
	if el == nil {
		return nil, fmt.Errorf("wss: Reference %s names no element of the envelope", truncate(r.uri, 80))
	}
	h, sha1, ok := digestHash(r.digest)
	if !ok {
		return nil, fmt.Errorf("wss: Reference %s uses unsupported DigestMethod %q (want sha256, sha384 or sha512)", truncate(r.uri, 80), truncate(r.digest, 80))
	}
	if sha1 && !allowSHA1 {
		return nil, fmt.Errorf("wss: Reference %s uses a SHA-1 digest, which is refused; set AllowSHA1 for a legacy partner", truncate(r.uri, 80))
	}
	c, err := canonicalize(el, r.prefixList)
	if err != nil {
		return nil, fmt.Errorf("wss: canonicalize <%s>: %v", el.FullTag(), err)
	}
	d := h.New()
	d.Write(c)
	if !hmac.Equal(d.Sum(nil), r.value) {
		return nil, fmt.Errorf("wss: the digest of <%s> (Reference %s) does not match: the element was changed after signing", el.FullTag(), truncate(r.uri, 80))
	}
	return el, nil
}

// decodeBase64 decodes base64 that may be wrapped over lines, as
// XML Signature producers often write it.
func decodeBase64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
	return base64.StdEncoding.DecodeString(s)
}
