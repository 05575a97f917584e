package wss

import (
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/mtlsrelay/mtlsrelay/internal/pki"
)

// resign parses a signed envelope, lets mutate change it, then recomputes
// every reference's digest with digestURI and the SignatureValue with
// sigURI, as a signer would have made them. It builds the envelopes that
// Verify must refuse for what they are, not for a broken signature.
func resign(t *testing.T, signed []byte, p profile, digestURI, sigURI string, mutate func(env *envelope, sec, si *etree.Element)) []byte {
	t.Helper()
	env, err := parseEnvelope(signed)
	if err != nil {
		t.Fatal(err)
	}
	sec := childrenNamed(env.header, wsseNS, tagSecurity)[0]
	sig := childrenNamed(sec, dsNS, "Signature")[0]
	si := childrenNamed(sig, dsNS, "SignedInfo")[0]
	if mutate != nil {
		mutate(env, sec, si)
	}
	ids := indexIDs(env.root)
	dh, _, _ := digestHash(digestURI)
	for _, r := range childrenNamed(si, dsNS, "Reference") {
		el := ids.byID[strings.TrimPrefix(r.SelectAttrValue("URI", ""), "#")]
		// Honour an InclusiveNamespaces a mutation added; an error here
		// is a non-exclusive transform, left for Verify to refuse.
		prefixList, _ := excC14NPrefixList(r.FindElement("./Transforms/Transform"), "")
		c, err := canonicalize(el, prefixList)
		if err != nil {
			t.Fatal(err)
		}
		h := dh.New()
		h.Write(c)
		childrenNamed(r, dsNS, "DigestMethod")[0].CreateAttr("Algorithm", digestURI)
		childrenNamed(r, dsNS, "DigestValue")[0].SetText(base64.StdEncoding.EncodeToString(h.Sum(nil)))
	}
	childrenNamed(si, dsNS, "SignatureMethod")[0].CreateAttr("Algorithm", sigURI)
	m, _ := signatureMethod(sigURI)
	c, err := canonicalize(si, "")
	if err != nil {
		t.Fatal(err)
	}
	h := m.hash.New()
	h.Write(c)
	v, err := signDigest(p.key, h.Sum(nil), m.hash)
	if err != nil {
		t.Fatal(err)
	}
	childrenNamed(sig, dsNS, "SignatureValue")[0].SetText(base64.StdEncoding.EncodeToString(v))
	out, err := serialize(env.doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// edit parses signed, applies f and serializes, without re-signing.
func edit(t *testing.T, signed []byte, f func(env *envelope, sec *etree.Element)) []byte {
	t.Helper()
	env, err := parseEnvelope(signed)
	if err != nil {
		t.Fatal(err)
	}
	f(env, childrenNamed(env.header, wsseNS, tagSecurity)[0])
	out, err := serialize(env.doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func removeRefTo(si *etree.Element, id string) {
	for _, r := range childrenNamed(si, dsNS, "Reference") {
		if r.SelectAttrValue("URI", "") == "#"+id {
			si.RemoveChild(r)
		}
	}
}

// TestResignHelperMakesValidSignatures guards the tests below: what
// resign makes, including SHA-1 variants, xmlsec1 verifies, so Verify's
// refusals there are policy, not breakage.
func TestResignHelperMakesValidSignatures(t *testing.T) {
	ca := newCA(t)
	p := rsaProfile(t, ca)
	signed, err := Sign(envelopeXML(soap11NS, "", sampleBody), p.cert, p.key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sha1 := resign(t, signed, p, digestSHA1, dsig.RSASHA1SignatureMethod, nil)
	if out, err := xmlsec1Verify(t, sha1, p.certPEM(), idElemsFor(soap11NS)...); err != nil {
		t.Fatalf("xmlsec1: %v\n%s", err, out)
	}
	if _, err := Verify(sha1, VerifyOptions{Roots: p.roots(), AllowSHA1: true}); err != nil {
		t.Fatalf("Verify with AllowSHA1: %v", err)
	}
	// An InclusiveNamespaces PrefixList on the Body's transform changes
	// the canonical form (soap and the unused xsd declaration stay); both
	// verifiers must honour it.
	withPrefixList := resign(t, signed, p, digestSHA256, dsig.RSASHA256SignatureMethod, func(env *envelope, sec, si *etree.Element) {
		env.root.CreateAttr("xmlns:xsd", "http://www.w3.org/2001/XMLSchema")
		tr := si.FindElement("./Reference/Transforms/Transform")
		inc := tr.CreateElement("ec:InclusiveNamespaces")
		inc.CreateAttr("xmlns:ec", excC14N)
		inc.CreateAttr("PrefixList", "soap xsd")
	})
	if out, err := xmlsec1Verify(t, withPrefixList, p.certPEM(), idElemsFor(soap11NS)...); err != nil {
		t.Fatalf("xmlsec1 with PrefixList: %v\n%s", err, out)
	}
	if _, err := Verify(withPrefixList, VerifyOptions{Roots: p.roots()}); err != nil {
		t.Fatalf("Verify with PrefixList: %v", err)
	}
	// Ignoring the PrefixList would give another digest: prove it matters.
	env, _ := parseEnvelope(withPrefixList)
	with, _ := canonicalize(env.body, "soap xsd")
	without, _ := canonicalize(env.body, "")
	if string(with) == string(without) {
		t.Fatal("the PrefixList does not change the Body's canonical form; the case proves nothing")
	}
	sha512 := resign(t, signed, p, digestSHA512, dsig.RSASHA512SignatureMethod, nil)
	if _, err := Verify(sha512, VerifyOptions{Roots: p.roots()}); err != nil {
		t.Fatalf("Verify sha512: %v", err)
	}
	e := ecdsaProfile(t, ca)
	esigned, err := Sign(envelopeXML(soap11NS, "", sampleBody), e.cert, e.key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e384 := resign(t, esigned, e, digestSHA384, dsig.ECDSASHA384SignatureMethod, nil)
	if out, err := xmlsec1Verify(t, e384, e.certPEM(), idElemsFor(soap11NS)...); err != nil {
		t.Fatalf("xmlsec1 ecdsa-sha384: %v\n%s", err, out)
	}
	if _, err := Verify(e384, VerifyOptions{Roots: e.roots()}); err != nil {
		t.Fatalf("Verify ecdsa-sha384: %v", err)
	}
}

// TestVerifyRefuses lists responses Verify must turn down, each with the
// error that tells an operator why.
func TestVerifyRefuses(t *testing.T) {
	ca := newCA(t)
	p := rsaProfile(t, ca)
	e := ecdsaProfile(t, ca)
	signed, err := Sign(envelopeXML(soap11NS, "", sampleBody), p.cert, p.key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	expiredLeaf, err := ca.Issue(pki.LeafOptions{CommonName: "expired", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	expiredSigned, err := Sign(envelopeXML(soap11NS, "", sampleBody), expiredLeaf.Cert, expiredLeaf.Key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	future, err := Sign(envelopeXML(soap11NS, "", sampleBody), e.cert, e.key, Options{Now: func() time.Time { return time.Now().Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	esigned, err := Sign(envelopeXML(soap11NS, "", sampleBody), e.cert, e.key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	otherCA := newCA(t)

	tests := []struct {
		name    string
		env     []byte
		roots   *x509.CertPool
		wantErr string
	}{
		{"missing Security header", envelopeXML(soap11NS, "", sampleBody), p.roots(), "no wsse:Security header"},
		{"Security header without Signature", envelopeXML(soap11NS, `<wsse:Security xmlns:wsse="`+wsseNS+`"/>`, sampleBody), p.roots(), "no ds:Signature"},
		{"two Security headers", edit(t, signed, func(env *envelope, sec *etree.Element) {
			env.header.AddChild(sec.Copy())
		}), p.roots(), "2 wsse:Security headers"},
		{"wrapping: signed Body moved to a header, new Body with the same id", edit(t, signed, func(env *envelope, sec *etree.Element) {
			evil := env.body.Copy()
			evil.FindElement(".//Symbol").SetText("EVIL")
			wrapper := env.header.CreateElement("w:Wrapper")
			wrapper.CreateAttr("xmlns:w", "urn:wrap")
			env.root.RemoveChild(env.body)
			wrapper.AddChild(env.body)
			env.root.AddChild(evil)
		}), p.roots(), "appears more than once"},
		{"wrapping: signed Body moved to a header, new Body without id", edit(t, signed, func(env *envelope, sec *etree.Element) {
			evil := env.body.Copy()
			evil.RemoveAttr("wsu:Id")
			evil.FindElement(".//Symbol").SetText("EVIL")
			wrapper := env.header.CreateElement("w:Wrapper")
			wrapper.CreateAttr("xmlns:w", "urn:wrap")
			env.root.RemoveChild(env.body)
			wrapper.AddChild(env.body)
			env.root.AddChild(evil)
		}), p.roots(), "does not cover the envelope's soap:Body"},
		{"wrapping: unprefixed Id with the Body's value elsewhere", edit(t, signed, func(env *envelope, sec *etree.Element) {
			env.header.CreateElement("x").CreateAttr("Id", wsuID(env.body))
		}), p.roots(), "appears more than once"},
		{"unsigned Timestamp", resign(t, signed, p, digestSHA256, dsig.RSASHA256SignatureMethod, func(env *envelope, sec, si *etree.Element) {
			removeRefTo(si, wsuID(childrenNamed(sec, wsuNS, tagTimestamp)[0]))
		}), p.roots(), "wsu:Timestamp is not covered"},
		{"Body not referenced", resign(t, signed, p, digestSHA256, dsig.RSASHA256SignatureMethod, func(env *envelope, sec, si *etree.Element) {
			removeRefTo(si, wsuID(env.body))
		}), p.roots(), "does not cover the envelope's soap:Body"},
		{"certificate not chaining to Roots", signed, otherCA.Pool(), "not trusted"},
		{"expired certificate", expiredSigned, ca.Pool(), "not trusted"},
		{"SHA-1 digests and rsa-sha1", resign(t, signed, p, digestSHA1, dsig.RSASHA1SignatureMethod, nil), p.roots(), "SHA-1"},
		{"SHA-1 digests under rsa-sha256", resign(t, signed, p, digestSHA1, dsig.RSASHA256SignatureMethod, nil), p.roots(), "SHA-1 digest"},
		{"inclusive c14n transform", resign(t, signed, p, digestSHA256, dsig.RSASHA256SignatureMethod, func(env *envelope, sec, si *etree.Element) {
			si.FindElement("./Reference/Transforms/Transform").CreateAttr("Algorithm", string(dsig.CanonicalXML10RecAlgorithmId))
		}), p.roots(), "only exclusive c14n"},
		{"Timestamp created in the future", future, e.roots(), "in the future"},
		{"ECDSA signature in ASN.1 DER", edit(t, esigned, func(env *envelope, sec *etree.Element) {
			sv := sec.FindElement("./Signature/SignatureValue")
			raw, _ := base64.StdEncoding.DecodeString(sv.Text())
			sv.SetText(base64.StdEncoding.EncodeToString(append(raw, 0)))
		}), e.roots(), "want 64 (r||s"},
		{"signature value changed", edit(t, signed, func(env *envelope, sec *etree.Element) {
			sv := sec.FindElement("./Signature/SignatureValue")
			raw, _ := base64.StdEncoding.DecodeString(sv.Text())
			raw[10] ^= 1
			sv.SetText(base64.StdEncoding.EncodeToString(raw))
		}), p.roots(), "does not verify"},
		{"DOCTYPE", append([]byte(`<!DOCTYPE x [<!ENTITY a "b">]>`), signed[len(`<?xml version="1.0" encoding="utf-8"?>`):]...), p.roots(), "DOCTYPE"},
		{"KeyInfo pointing at no token", edit(t, signed, func(env *envelope, sec *etree.Element) {
			sec.FindElement("./Signature/KeyInfo/SecurityTokenReference/Reference").CreateAttr("URI", "#nothing")
		}), p.roots(), "names no wsse:BinarySecurityToken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(tt.env, VerifyOptions{Roots: tt.roots})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "MII") {
				t.Fatalf("error carries certificate or document bytes: %v", err)
			}
		})
	}
}

// TestVerifyAccepts lists response shapes other stacks send that Verify
// must take.
func TestVerifyAccepts(t *testing.T) {
	ca := newCA(t)
	p := ecdsaProfile(t, ca)
	signed, err := Sign(envelopeXML(soap12NS, "", sampleBody), p.cert, p.key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	certB64 := base64.StdEncoding.EncodeToString(p.cert.Raw)
	// KeyInfo is outside SignedInfo, so rewriting it needs no re-signing.
	withKeyInfo := func(f func(ki *etree.Element)) []byte {
		return edit(t, signed, func(env *envelope, sec *etree.Element) {
			ki := sec.FindElement("./Signature/KeyInfo")
			for _, c := range ki.ChildElements() {
				ki.RemoveChild(c)
			}
			f(ki)
		})
	}
	tests := []struct {
		name string
		env  []byte
		opts VerifyOptions
	}{
		{"as signed", signed, VerifyOptions{Roots: p.roots()}},
		{"X509Data in KeyInfo", withKeyInfo(func(ki *etree.Element) {
			ki.CreateElement("ds:X509Data").CreateElement("ds:X509Certificate").SetText(certB64)
		}), VerifyOptions{Roots: p.roots()}},
		{"X509Data with the CA first, in a SecurityTokenReference (zeep's form)", withKeyInfo(func(ki *etree.Element) {
			xd := ki.CreateElement("wsse:SecurityTokenReference").CreateElement("ds:X509Data")
			xd.CreateElement("ds:X509Certificate").SetText(base64.StdEncoding.EncodeToString(ca.CertDER))
			xd.CreateElement("ds:X509Certificate").SetText(certB64)
		}), VerifyOptions{Roots: p.roots()}},
		{"expired Timestamp within the skew", mustSign(t, p, Options{TTL: time.Second, Now: func() time.Time { return time.Now().Add(-30 * time.Second) }}), VerifyOptions{Roots: p.roots()}},
		{"Timestamp checked against opts.Now", mustSign(t, p, Options{Now: func() time.Time { return time.Now().Add(-30 * time.Minute) }}), VerifyOptions{Roots: p.roots(), Now: func() time.Time { return time.Now().Add(-30 * time.Minute) }}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Verify(tt.env, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(p.cert) {
				t.Fatal("Verify returned another certificate than the signer's")
			}
		})
	}
}

func mustSign(t *testing.T, p profile, opts Options) []byte {
	t.Helper()
	out, err := Sign(envelopeXML(soap11NS, "", sampleBody), p.cert, p.key, opts)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
