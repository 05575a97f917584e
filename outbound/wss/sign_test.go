package wss

import (
	"encoding/xml"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestSignVerifiedByXmlsec1ZeepAndVerify signs RSA and ECDSA profiles'
// SOAP 1.1 and 1.2 envelopes and has three verifiers check them: xmlsec1
// and zeep (written by others, so they catch what a verifier written
// alongside the signer would share) and Verify.
func TestSignVerifiedByXmlsec1ZeepAndVerify(t *testing.T) {
	ca := newCA(t)
	for _, p := range []profile{rsaProfile(t, ca), ecdsaProfile(t, ca)} {
		for _, v := range soapVersions {
			t.Run(p.name+"/"+v.name, func(t *testing.T) {
				signed, err := Sign(envelopeXML(v.ns, "", sampleBody), p.cert, p.key, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if out, err := xmlsec1Verify(t, signed, p.certPEM(), idElemsFor(v.ns)...); err != nil {
					t.Fatalf("xmlsec1 --verify: %v\n%s\n%s", err, out, signed)
				}
				if out, err := zeepVerify(t, signed, p.certPEM()); err != nil {
					t.Fatalf("zeep: %v\n%s\n%s", err, out, signed)
				}
				got, err := Verify(signed, VerifyOptions{Roots: p.roots()})
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !got.Equal(p.cert) {
					t.Fatal("Verify returned another certificate than the signer's")
				}
			})
		}
	}
}

// TestTamperedBodyFailsEveryVerifier changes one character of the Body
// after signing: all three verifiers must refuse it. This is also what
// shows the external-tool checks can fail.
func TestTamperedBodyFailsEveryVerifier(t *testing.T) {
	ca := newCA(t)
	for _, p := range []profile{rsaProfile(t, ca), ecdsaProfile(t, ca)} {
		t.Run(p.name, func(t *testing.T) {
			signed, err := Sign(envelopeXML(soap11NS, "", sampleBody), p.cert, p.key, Options{})
			if err != nil {
				t.Fatal(err)
			}
			bad := tamperBody(t, signed)
			if out, err := xmlsec1Verify(t, bad, p.certPEM(), idElemsFor(soap11NS)...); err == nil {
				t.Fatalf("xmlsec1 accepted a tampered body:\n%s", out)
			}
			if out, err := zeepVerify(t, bad, p.certPEM()); err == nil || !strings.Contains(out, "signature verification failed") {
				t.Fatalf("zeep: err %v, output %q; want a signature failure", err, out)
			}
			if _, err := Verify(bad, VerifyOptions{Roots: p.roots()}); err == nil || !strings.Contains(err.Error(), "does not match") {
				t.Fatalf("Verify: %v; want a digest mismatch", err)
			}
		})
	}
}

// TestExpiredTimestamp signs an hour ago with a one-minute TTL: the
// signature itself is fine (xmlsec1 accepts it), but zeep's receiving
// script and Verify must refuse the stale Timestamp.
func TestExpiredTimestamp(t *testing.T) {
	ca := newCA(t)
	p := ecdsaProfile(t, ca)
	past := func() time.Time { return time.Now().Add(-time.Hour) }
	signed, err := Sign(envelopeXML(soap12NS, "", sampleBody), p.cert, p.key, Options{Now: past, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := xmlsec1Verify(t, signed, p.certPEM(), idElemsFor(soap12NS)...); err != nil {
		t.Fatalf("xmlsec1 should accept the signature itself: %v\n%s", err, out)
	}
	if out, err := zeepVerify(t, signed, p.certPEM()); err == nil || !strings.Contains(out, "expired") {
		t.Fatalf("zeep script: err %v, output %q; want an expiry failure", err, out)
	}
	if _, err := Verify(signed, VerifyOptions{Roots: p.roots()}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Verify: %v; want expired", err)
	}
}

// TestSignHeadersRoundTrip keeps an existing header block, signs it too,
// and has xmlsec1 (told the block carries ids) and Verify accept it.
func TestSignHeadersRoundTrip(t *testing.T) {
	ca := newCA(t)
	const hdrNS = "urn:example:routing"
	header := `<r:To xmlns:r="urn:example:routing">partner-a</r:To><r:Trace xmlns:r="urn:example:routing">keep me</r:Trace>`
	for _, p := range []profile{rsaProfile(t, ca), ecdsaProfile(t, ca)} {
		for _, v := range soapVersions {
			t.Run(p.name+"/"+v.name, func(t *testing.T) {
				signed, err := Sign(envelopeXML(v.ns, header, sampleBody), p.cert, p.key, Options{
					SignHeaders: []xml.Name{{Space: hdrNS, Local: "To"}},
				})
				if err != nil {
					t.Fatal(err)
				}
				s := string(signed)
				if !strings.Contains(s, ">partner-a</r:To>") || !strings.Contains(s, "keep me</r:Trace>") {
					t.Fatalf("existing header blocks lost:\n%s", s)
				}
				if n := strings.Count(s, "<ds:Reference "); n != 3 {
					t.Fatalf("%d references, want 3 (Body, Timestamp, r:To)", n)
				}
				if out, err := xmlsec1Verify(t, signed, p.certPEM(), idElemsFor(v.ns, hdrNS+":To")...); err != nil {
					t.Fatalf("xmlsec1: %v\n%s\n%s", err, out, signed)
				}
				if _, err := Verify(signed, VerifyOptions{Roots: p.roots()}); err != nil {
					t.Fatalf("Verify: %v", err)
				}
				// Changing the signed header block must break both.
				bad := []byte(strings.Replace(s, ">partner-a<", ">partner-b<", 1))
				if out, err := xmlsec1Verify(t, bad, p.certPEM(), idElemsFor(v.ns, hdrNS+":To")...); err == nil {
					t.Fatalf("xmlsec1 accepted a changed signed header:\n%s", out)
				}
				if _, err := Verify(bad, VerifyOptions{Roots: p.roots()}); err == nil {
					t.Fatal("Verify accepted a changed signed header")
				}
			})
		}
	}
}

// TestSignLayout checks the parts of the Security header the brief fixes
// and that no verifier would notice missing: order, mustUnderstand in the
// envelope's namespace, the token reference, fresh ids per message.
func TestSignLayout(t *testing.T) {
	ca := newCA(t)
	p := rsaProfile(t, ca)
	env := envelopeXML(soap12NS, `<x:H xmlns:x="urn:x">1</x:H>`, sampleBody)
	a, err := Sign(env, p.cert, p.key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Sign(env, p.cert, p.key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := parseEnvelope(a)
	if err != nil {
		t.Fatal(err)
	}
	secs := childrenNamed(parsed.header, wsseNS, tagSecurity)
	if len(secs) != 1 {
		t.Fatalf("%d Security headers", len(secs))
	}
	sec := secs[0]
	var order []string
	for _, c := range sec.ChildElements() {
		order = append(order, c.Tag)
	}
	if got := strings.Join(order, ","); got != "BinarySecurityToken,Timestamp,Signature" {
		t.Fatalf("Security children %s", got)
	}
	mu := sec.SelectAttr("soap:mustUnderstand")
	if mu == nil || mu.Value != "1" || mu.NamespaceURI() != soap12NS {
		t.Fatalf("mustUnderstand: %+v", mu)
	}
	if !strings.Contains(string(a), `<x:H xmlns:x="urn:x">1</x:H>`) {
		t.Fatal("existing header block lost")
	}
	if wsuID(parsed.body) == "" {
		t.Fatal("Body has no wsu:Id")
	}
	pb, _ := parseEnvelope(b)
	if wsuID(parsed.body) == wsuID(pb.body) {
		t.Fatal("two messages share a Body id")
	}
	bst := childrenNamed(sec, wsseNS, tagBST)[0]
	if !strings.Contains(string(a), `URI="#`+wsuID(bst)+`" ValueType="`+valueTypeX509v3+`"`) {
		t.Fatal("KeyInfo does not reference the BinarySecurityToken")
	}
}

// TestSignRefuses lists the envelopes and keys Sign turns down.
func TestSignRefuses(t *testing.T) {
	ca := newCA(t)
	p := ecdsaProfile(t, ca)
	other := rsaProfile(t, ca)
	tests := []struct {
		name    string
		env     []byte
		opts    Options
		key     profile
		wantErr string
	}{
		{"existing Security header", envelopeXML(soap11NS, `<wsse:Security xmlns:wsse="`+wsseNS+`"/>`, sampleBody), Options{}, p, "already has a wsse:Security"},
		{"missing header to sign", envelopeXML(soap11NS, "", sampleBody), Options{SignHeaders: []xml.Name{{Space: "urn:x", Local: "Missing"}}}, p, "{urn:x}Missing"},
		{"key of another certificate", envelopeXML(soap11NS, "", sampleBody), Options{}, other, "does not belong"},
		{"not a SOAP envelope", []byte(`<a/>`), Options{}, p, "not a SOAP"},
		{"not XML", []byte(`<soap:Envelope`), Options{}, p, "not well-formed"},
		{"no Body", []byte(`<soap:Envelope xmlns:soap="` + soap11NS + `"/>`), Options{}, p, "no soap:Body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Sign(tt.env, p.cert, tt.key.key, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			var missing *MissingHeaderError
			if errors.As(err, &missing) != (len(tt.opts.SignHeaders) > 0) {
				t.Fatalf("errors.As(MissingHeaderError) is %v for %v", !(len(tt.opts.SignHeaders) > 0), err)
			}
		})
	}
}
