package wss

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"time"

	"github.com/beevik/etree"
)

// Options says how Sign signs.
type Options struct {
	// TTL is the lifetime of the wsu:Timestamp (Created = now, Expires =
	// now+TTL). Default 5m.
	TTL time.Duration
	// SignHeaders names SOAP header blocks (children of soap:Header) to
	// sign besides Body and Timestamp, by namespace URI and local name.
	// Each must be present, else Sign returns an error naming it; a name
	// that matches several blocks signs them all.
	SignHeaders []xml.Name
	// Now returns the time; nil means time.Now.
	Now func() time.Time
}

// defaultTTL is the Timestamp lifetime when Options.TTL is zero: long
// enough for a slow partner and a few minutes of clock drift, short enough
// to limit replays.
const defaultTTL = 5 * time.Minute

// Sign returns envelope (a complete SOAP 1.1 or 1.2 envelope, Header
// optional) with a wsse:Security header (soap:mustUnderstand="1") holding,
// in this order, a wsse:BinarySecurityToken with cert, a wsu:Timestamp and
// a ds:Signature made with key over the soap:Body, the Timestamp and the
// header blocks opts.SignHeaders names, each referenced by a random
// wsu:Id. Digests are SHA-256 after exclusive c14n; the signature is
// rsa-sha256 or ecdsa-sha256 (r||s) depending on key. The rest of the
// envelope is kept. An envelope that already has a wsse:Security header is
// refused: merging into a header someone else built is not this
// function's job.
func Sign(envelope []byte, cert *x509.Certificate, key crypto.Signer, opts Options) ([]byte, error) {
	if cert == nil || key == nil {
		return nil, fmt.Errorf("%w: Sign needs a certificate and its private key", ErrKey)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%w: the private key does not belong to the certificate: check the profile's keystore", ErrKey)
	}
	method, err := signingMethod(key.Public())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	env, err := parseEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	if len(childrenNamed(env.header, wsseNS, tagSecurity)) > 0 {
		return nil, errors.New("wss: the envelope already has a wsse:Security header; Sign adds its own and does not merge")
	}
	var headers []*etree.Element
	for _, n := range opts.SignHeaders {
		found := childrenNamed(env.header, n.Space, n.Local)
		if len(found) == 0 {
			return nil, &MissingHeaderError{Name: "{" + n.Space + "}" + n.Local}
		}
		headers = append(headers, found...)
	}

	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = defaultTTL
	}

	p := newPrefixes(env.root)
	if env.header == nil {
		env.header = etree.NewElement(tagHeader)
		env.header.Space = env.root.Space
		env.root.InsertChildAt(env.body.Index(), env.header)
	}

	// Ids are random so that two messages never share one and a replayed
	// part cannot be mistaken for another message's.
	ix := indexIDs(env.root)
	taken := ix.byID
	// idOf gives el a wsu:Id unless it has one; declare says whether el
	// needs its own xmlns declaration (it does outside wsse:Security). A
	// wsu:Id the call gave that another element of the envelope also
	// carries (as wsu:Id, Id, ID or id) is refused: the partner's verifier
	// could resolve the reference to either element.
	idOf := func(el *etree.Element, kind string, declare bool) (string, error) {
		if id := wsuID(el); id != "" {
			if ix.dups[id] {
				return "", fmt.Errorf("wss: <%s> has wsu:Id %q, which another element of the envelope also carries as an id; a signature reference to it would be ambiguous", truncate(el.FullTag(), 80), truncate(id, 60))
			}
			return id, nil
		}
		id := newID(kind)
		for taken[id] != nil {
			id = newID(kind)
		}
		taken[id] = el
		if declare {
			el.CreateAttr("xmlns:"+p.wsu, wsuNS)
		}
		el.CreateAttr(p.wsu+":Id", id)
		return id, nil
	}

	sec := etree.NewElement(p.wsse + ":" + tagSecurity)
	sec.CreateAttr("xmlns:"+p.wsse, wsseNS)
	sec.CreateAttr("xmlns:"+p.wsu, wsuNS)
	soapPrefix := p.soapPrefix(env)
	if soapPrefix != env.root.Space {
		sec.CreateAttr("xmlns:"+soapPrefix, env.soapNS)
	}
	sec.CreateAttr(soapPrefix+":mustUnderstand", "1")
	// Security goes first among the header blocks: a receiver processes
	// it before the blocks it protects.
	env.header.InsertChildAt(0, sec)

	bst := sec.CreateElement(p.wsse + ":" + tagBST)
	bst.CreateAttr("EncodingType", encodingBase64)
	bst.CreateAttr("ValueType", valueTypeX509v3)
	bstID, _ := idOf(bst, "X509", false) // new elements: fresh ids
	bst.SetText(base64.StdEncoding.EncodeToString(cert.Raw))

	t := now()
	ts := sec.CreateElement(p.wsu + ":" + tagTimestamp)
	tsID, _ := idOf(ts, "TS", false)
	ts.CreateElement(p.wsu + ":Created").SetText(t.UTC().Format(timeLayout))
	ts.CreateElement(p.wsu + ":Expires").SetText(t.Add(ttl).UTC().Format(timeLayout))

	type ref struct {
		id string
		el *etree.Element
	}
	bodyID, err := idOf(env.body, "id", true)
	if err != nil {
		return nil, err
	}
	refs := []ref{{bodyID, env.body}, {tsID, ts}}
	for _, h := range headers {
		id, err := idOf(h, "id", true)
		if err != nil {
			return nil, err
		}
		refs = append(refs, ref{id, h})
	}

	ds := func(tag string) string { return p.ds + ":" + tag }
	sig := sec.CreateElement(ds("Signature"))
	sig.CreateAttr("xmlns:"+p.ds, dsNS)
	sig.CreateAttr("Id", newID("SIG"))
	si := sig.CreateElement(ds("SignedInfo"))
	si.CreateElement(ds("CanonicalizationMethod")).CreateAttr("Algorithm", excC14N)
	si.CreateElement(ds("SignatureMethod")).CreateAttr("Algorithm", method)
	for _, r := range refs {
		c, err := canonicalize(r.el, "")
		if err != nil {
			return nil, fmt.Errorf("wss: canonicalize <%s>: %v", r.el.FullTag(), err)
		}
		sum := sha256.Sum256(c)
		re := si.CreateElement(ds("Reference"))
		re.CreateAttr("URI", "#"+r.id)
		re.CreateElement(ds("Transforms")).CreateElement(ds("Transform")).CreateAttr("Algorithm", excC14N)
		re.CreateElement(ds("DigestMethod")).CreateAttr("Algorithm", digestSHA256)
		re.CreateElement(ds("DigestValue")).SetText(base64.StdEncoding.EncodeToString(sum[:]))
	}
	c, err := canonicalize(si, "")
	if err != nil {
		return nil, fmt.Errorf("wss: canonicalize SignedInfo: %v", err)
	}
	sum := sha256.Sum256(c)
	value, err := signDigest(key, sum[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	sig.CreateElement(ds("SignatureValue")).SetText(base64.StdEncoding.EncodeToString(value))
	str := sig.CreateElement(ds("KeyInfo")).CreateElement(p.wsse + ":" + tagSTR)
	sref := str.CreateElement(p.wsse + ":Reference")
	sref.CreateAttr("URI", "#"+bstID)
	sref.CreateAttr("ValueType", valueTypeX509v3)

	return serialize(env.doc)
}

// ErrKey marks Sign's errors that come from the key and certificate (none,
// a key of another certificate, a key type that cannot sign XML), not from
// the envelope: the profile's keystore is at fault.
var ErrKey = errors.New("wss: key")

// MissingHeaderError is Sign's error when a header block that
// Options.SignHeaders names is not in the envelope: a fault of the call's
// input rather than of signing, which callers may want to report as such.
type MissingHeaderError struct {
	// Name is the block's name in Clark notation, {namespace}local.
	Name string
}

func (e *MissingHeaderError) Error() string {
	return "wss: header block " + e.Name + " to sign is not in the envelope's soap:Header"
}

// samePublicKey reports whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
