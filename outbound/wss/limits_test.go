package wss

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	dsig "github.com/russellhaering/goxmldsig"
)

// nsDecls returns n namespace declarations.
func nsDecls(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, ` xmlns:p%d="urn:p"`, i)
	}
	return b.String()
}

// TestLimitsRefuseHostileEnvelopes checks that Sign and Verify refuse,
// before any canonicalization, envelopes over MaxNamespaceDecls,
// MaxElements or MaxDepth: a namespace-heavy document made both quadratic
// (a 373 KB unsigned response took 21 s to refuse). The inputs are just
// over each limit, so the test is quick.
func TestLimitsRefuseHostileEnvelopes(t *testing.T) {
	p := ecdsaProfile(t, newCA(t))
	tests := []struct{ name, env string }{
		{"namespace declarations in scope", string(envelopeXML(soap11NS, "", `<w`+nsDecls(MaxNamespaceDecls/2)+`><x`+nsDecls(MaxNamespaceDecls/2)+`><a xmlns:one="urn:more"/></x></w>`))},
		// The reviewer's case: the junk is in SignedInfo, which Verify
		// used to canonicalize before any check.
		{"namespace declarations in SignedInfo", string(envelopeXML(soap11NS, `<wsse:Security xmlns:wsse="`+wsseNS+`"><ds:Signature xmlns:ds="`+dsNS+`"`+nsDecls(MaxNamespaceDecls+1)+`><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="`+excC14N+`"/><ds:SignatureMethod Algorithm="`+dsig.RSASHA256SignatureMethod+`"/>`+strings.Repeat("<ds:x/>", 1000)+`</ds:SignedInfo><ds:SignatureValue>AAAA</ds:SignatureValue><ds:KeyInfo/></ds:Signature></wsse:Security>`, "<x/>"))},
		{"elements", string(envelopeXML(soap11NS, "", "<l>"+strings.Repeat("<a/>", MaxElements)+"</l>"))},
		{"depth", string(envelopeXML(soap11NS, "", strings.Repeat("<a>", MaxDepth)+strings.Repeat("</a>", MaxDepth)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Verify([]byte(tt.env), VerifyOptions{Roots: p.roots()}); !errors.Is(err, ErrLimits) {
				t.Errorf("Verify: err %v, want ErrLimits", err)
			}
			if _, err := Sign([]byte(tt.env), p.cert, p.key, Options{}); !errors.Is(err, ErrLimits) {
				t.Errorf("Sign: err %v, want ErrLimits", err)
			}
		})
	}
	// Just under the limits still signs and verifies.
	ok := envelopeXML(soap11NS, "", `<w`+nsDecls(MaxNamespaceDecls-10)+`>`+strings.Repeat("<a>ACME</a>", 2000)+`</w>`)
	signed, err := Sign(ok, p.cert, p.key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(signed, VerifyOptions{Roots: p.roots()}); err != nil {
		t.Fatal(err)
	}
}

// TestTrailingContentRefused: a document with a second root element (or
// text) after the envelope is refused by Sign and Verify; lxml refuses it
// too, and a receiver reading the second envelope would read content the
// signature does not cover. Whitespace, comments and processing
// instructions after the root stay fine.
func TestTrailingContentRefused(t *testing.T) {
	p := rsaProfile(t, newCA(t))
	signed, err := Sign(envelopeXML(soap11NS, "", `<q xmlns="urn:q">PAY 10</q>`), p.cert, p.key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	second := `<soap:Envelope xmlns:soap="` + soap11NS + `"><soap:Body><q xmlns="urn:q">PAY 1000000</q></soap:Body></soap:Envelope>`
	for _, tail := range []string{second, "junk", "<x/>"} {
		if _, err := Verify(append(append([]byte{}, signed...), tail...), VerifyOptions{Roots: p.roots()}); err == nil || !strings.Contains(err.Error(), "outside the envelope") && !strings.Contains(err.Error(), "after the envelope") {
			t.Errorf("Verify(signed + %.20q): err %v, want trailing content refused", tail, err)
		}
		if _, err := Sign(append(envelopeXML(soap11NS, "", "<q/>"), tail...), p.cert, p.key, Options{}); err == nil {
			t.Errorf("Sign(envelope + %.20q) succeeded", tail)
		}
	}
	if _, err := Verify(append(append([]byte{}, signed...), "\n<!-- c --><?pi x?>\n"...), VerifyOptions{Roots: p.roots()}); err != nil {
		t.Errorf("Verify(signed + whitespace, comment, PI): %v", err)
	}
}

// TestSignRefusesDuplicateID: a header block to sign whose wsu:Id another
// element also carries (here the Body's content, as Id) would make the
// signature's reference ambiguous for the partner's verifier.
func TestSignRefusesDuplicateID(t *testing.T) {
	p := rsaProfile(t, newCA(t))
	hdr := `<h:To xmlns:h="urn:h" xmlns:wsu="` + wsuNS + `" wsu:Id="X">https://partner/real</h:To>`
	body := `<q xmlns="urn:q" Id="X">ACME</q>`
	_, err := Sign(envelopeXML(soap11NS, hdr, body), p.cert, p.key, Options{SignHeaders: []xml.Name{{Space: "urn:h", Local: "To"}}})
	if err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("err %v, want the duplicate id refused", err)
	}
	// A unique wsu:Id of the call's is still used as it is.
	hdr = strings.Replace(hdr, `"X"`, `"To-1"`, 1)
	signed, err := Sign(envelopeXML(soap11NS, hdr, body), p.cert, p.key, Options{SignHeaders: []xml.Name{{Space: "urn:h", Local: "To"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(signed), `URI="#To-1"`) {
		t.Fatal("the call's unique wsu:Id was not referenced")
	}
}

// TestVerifyRequiresBoundedTimestamp: a response must carry a signed
// Timestamp with Created and Expires at most MaxTimestampLifetime apart;
// without one a signed response could be replayed forever.
func TestVerifyRequiresBoundedTimestamp(t *testing.T) {
	p := rsaProfile(t, newCA(t))
	signed := mustSign(t, p, Options{})
	noTS := resign(t, signed, p, digestSHA256, dsig.RSASHA256SignatureMethod, func(env *envelope, sec, si *etree.Element) {
		ts := childrenNamed(sec, wsuNS, tagTimestamp)[0]
		removeRefTo(si, wsuID(ts))
		sec.RemoveChild(ts)
	})
	noExpires := resign(t, signed, p, digestSHA256, dsig.RSASHA256SignatureMethod, func(env *envelope, sec, si *etree.Element) {
		ts := childrenNamed(sec, wsuNS, tagTimestamp)[0]
		ts.RemoveChild(childrenNamed(ts, wsuNS, "Expires")[0])
	})
	tests := []struct {
		name, want string
		env        []byte
	}{
		{"no Timestamp", "no wsu:Timestamp", noTS},
		{"no Expires", "lacks Created or Expires", noExpires},
		{"valid for 2h", "more than", mustSign(t, p, Options{TTL: 2 * time.Hour})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(tt.env, VerifyOptions{Roots: p.roots()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := Verify(mustSign(t, p, Options{TTL: time.Hour}), VerifyOptions{Roots: p.roots()}); err != nil {
		t.Fatalf("a 1h Timestamp: %v", err)
	}
}
