package wss

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dsig "github.com/russellhaering/goxmldsig"

	"github.com/mtlsrelay/mtlsrelay/internal/testdeb"
)

// zeepSign signs env with testdata/zeep_sign.py.
func zeepSign(t *testing.T, env []byte, p profile, sigMethod, digest string) []byte {
	t.Helper()
	py := testdeb.PythonModules(t, []string{"zeep", "xmlsec"}, "python3-zeep", "python3-xmlsec")
	script, err := filepath.Abs("testdata/zeep_sign.py")
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	cmd := exec.Command(py, script, writeTemp(t, "env.xml", env), writeTemp(t, "key.pem", keyPEM), writeTemp(t, "cert.pem", p.certPEM()), sigMethod, digest)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("zeep_sign.py: %v\n%s", err, stderr)
	}
	return out
}

// TestVerifyAcceptsZeepSigned has zeep sign responses (its
// BinarySignature, with a Timestamp it signs too) and checks that Verify,
// written here, agrees with a signer written elsewhere; zeep's default
// SHA-1 needs AllowSHA1.
func TestVerifyAcceptsZeepSigned(t *testing.T) {
	ca := newCA(t)
	now := time.Now().UTC()
	ts := fmt.Sprintf(`<wsse:Security xmlns:wsse="%s" xmlns:wsu="%s"><wsu:Timestamp><wsu:Created>%s</wsu:Created><wsu:Expires>%s</wsu:Expires></wsu:Timestamp></wsse:Security>`,
		wsseNS, wsuNS, now.Format(time.RFC3339), now.Add(5*time.Minute).Format(time.RFC3339))
	tests := []struct {
		name          string
		p             profile
		sig, digest   string
		allowSHA1     bool
		wantErr       string
		wantSignature string
	}{
		{"RSA SHA-256", rsaProfile(t, ca), "RSA_SHA256", "SHA256", false, "", dsig.RSASHA256SignatureMethod},
		{"ECDSA SHA-256", ecdsaProfile(t, ca), "ECDSA_SHA256", "SHA256", false, "", dsig.ECDSASHA256SignatureMethod},
		{"RSA SHA-512", rsaProfile(t, ca), "RSA_SHA512", "SHA512", false, "", dsig.RSASHA512SignatureMethod},
		{"zeep default SHA-1 refused", rsaProfile(t, ca), "RSA_SHA1", "SHA1", false, "SHA-1", dsig.RSASHA1SignatureMethod},
		{"zeep default SHA-1 with AllowSHA1", rsaProfile(t, ca), "RSA_SHA1", "SHA1", true, "", dsig.RSASHA1SignatureMethod},
	}
	for _, tt := range tests {
		for _, v := range soapVersions {
			t.Run(tt.name+"/"+v.name, func(t *testing.T) {
				signed := zeepSign(t, envelopeXML(v.ns, ts, sampleBody), tt.p, tt.sig, tt.digest)
				if !strings.Contains(string(signed), tt.wantSignature) || strings.Count(string(signed), "<Reference URI=") != 2 {
					t.Fatalf("zeep did not sign Body and Timestamp with %s:\n%s", tt.wantSignature, signed)
				}
				got, err := Verify(signed, VerifyOptions{Roots: tt.p.roots(), AllowSHA1: tt.allowSHA1})
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("err %v, want %q", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatalf("Verify: %v\n%s", err, signed)
				}
				if !got.Equal(tt.p.cert) {
					t.Fatal("Verify returned another certificate than the signer's")
				}
				if _, err := Verify(tamperBody(t, signed), VerifyOptions{Roots: tt.p.roots(), AllowSHA1: tt.allowSHA1}); err == nil {
					t.Fatal("Verify accepted a tampered zeep-signed body")
				}
			})
		}
	}
}

// TestSignCanonicalizationEdgeCases signs envelopes whose content tests
// canonicalization (namespaces from the Envelope, default namespaces,
// CDATA, character references, attribute whitespace, a Body too large for
// etreeutils' 1000-element detach limit) and has xmlsec1, zeep and Verify
// check each.
func TestSignCanonicalizationEdgeCases(t *testing.T) {
	ca := newCA(t)
	p := rsaProfile(t, ca)
	big := strings.Repeat(`<i n="1">x</i>`, 5000)
	tests := []struct {
		name string
		ns   string
		env  string
	}{
		{"default-namespace envelope", soap11NS, `<?xml version="1.0"?><Envelope xmlns="` + soap11NS + `"><Body><q xmlns="urn:q">ACME</q></Body></Envelope>`},
		{"prefix declared on the Envelope, used in the Body", soap12NS, `<s:Envelope xmlns:s="` + soap12NS + `" xmlns:m="urn:m" xmlns:unused="urn:u"><s:Body><m:q>ACME</m:q></s:Body></s:Envelope>`},
		{"xsi:type QName and default namespace in the Body", soap11NS, `<soap:Envelope xmlns:soap="` + soap11NS + `" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soap:Body><q xmlns="urn:q"><v xsi:type="xsd:string">ACME</v></q></soap:Body></soap:Envelope>`},
		{"CDATA, char refs, CR, attribute whitespace", soap11NS, string(envelopeXML(soap11NS, "", `<q xmlns="urn:q" a="tab&#9;nl&#10;cr&#13;quote&quot;lt&lt;" b='single "x"'><![CDATA[ACME <raw> & more]]>&#13;&#x1F600;&gt;</q>`))},
		{"whitespace and comments between elements", soap11NS, "<soap:Envelope xmlns:soap=\"" + soap11NS + "\">\n  <soap:Header>\n    <h:x xmlns:h=\"urn:h\">1</h:x>\n  </soap:Header>\n  <soap:Body>\n    <!-- c -->\n    <q xmlns=\"urn:q\">\n      ACME\n    </q>\n  </soap:Body>\n</soap:Envelope>"},
		{"5000-element Body", soap12NS, string(envelopeXML(soap12NS, "", `<q xmlns="urn:q">ACME`+big+`</q>`))},
		// Exclusive c14n sorts attributes by (namespace URI, local name):
		// xml:lang (XML namespace) after xsi:nil (XMLSchema-instance).
		{"xml:lang and xsi:nil on one element", soap11NS, string(envelopeXML(soap11NS, "", `<m:GetQuote xmlns:m="urn:example:quotes" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><m:Symbol xml:lang="en" xsi:nil="false">ACME</m:Symbol></m:GetQuote>`))},
		{"prefixed attributes whose prefix and URI orders differ", soap11NS, string(envelopeXML(soap11NS, "", `<q xmlns="urn:q" xmlns:a="urn:z" xmlns:b="urn:a" a:k1="1" b:k2="2">ACME</q>`))},
		// No xmlns="" in the canonical form: no default namespace was
		// rendered above the Body's content.
		{"xmlns=\"\" at the Body top of a default-namespace envelope", soap11NS, `<Envelope xmlns="` + soap11NS + `"><Body><q xmlns="">ACME</q></Body></Envelope>`},
		{"literal tab and newline in an attribute value", soap11NS, string(envelopeXML(soap11NS, "", "<q xmlns=\"urn:q\" a=\"x\ty\nz\">ACME</q>"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signed, err := Sign([]byte(tt.env), p.cert, p.key, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if out, err := xmlsec1Verify(t, signed, p.certPEM(), idElemsFor(tt.ns)...); err != nil {
				t.Fatalf("xmlsec1: %v\n%s\n%s", err, out, truncate(string(signed), 3000))
			}
			if out, err := zeepVerify(t, signed, p.certPEM()); err != nil {
				t.Fatalf("zeep: %v\n%s", err, out)
			}
			if _, err := Verify(signed, VerifyOptions{Roots: p.roots()}); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if _, err := Verify(tamperBody(t, signed), VerifyOptions{Roots: p.roots()}); err == nil {
				t.Fatal("Verify accepted a tampered body")
			}
		})
	}
}

// TestVerifyZeepSignedEdgeCases has zeep sign responses whose
// canonicalization has pitfalls (attribute order by namespace URI,
// xmlns="" at the Body top, literal whitespace in attribute values, which
// libxml2 normalizes) and checks that Verify accepts them.
func TestVerifyZeepSignedEdgeCases(t *testing.T) {
	ca := newCA(t)
	p := rsaProfile(t, ca)
	now := time.Now().UTC()
	ts := fmt.Sprintf(`<wsse:Security xmlns:wsse="%s" xmlns:wsu="%s"><wsu:Timestamp><wsu:Created>%s</wsu:Created><wsu:Expires>%s</wsu:Expires></wsu:Timestamp></wsse:Security>`,
		wsseNS, wsuNS, now.Format(time.RFC3339), now.Add(5*time.Minute).Format(time.RFC3339))
	tests := []struct{ name, env string }{
		{"xml:lang and xsi:nil on one element", string(envelopeXML(soap11NS, ts, `<m:GetQuote xmlns:m="urn:example:quotes" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><m:Symbol xml:lang="en" xsi:nil="false">ACME</m:Symbol></m:GetQuote>`))},
		{"xmlns=\"\" at the Body top of a default-namespace envelope", `<Envelope xmlns="` + soap11NS + `"><Header>` + ts + `</Header><Body><q xmlns="">ACME</q></Body></Envelope>`},
		{"literal tab and newline in an attribute value", string(envelopeXML(soap11NS, ts, "<q xmlns=\"urn:q\" a=\"x\ty\nz\">ACME</q>"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signed := zeepSign(t, []byte(tt.env), p, "RSA_SHA256", "SHA256")
			if _, err := Verify(signed, VerifyOptions{Roots: p.roots()}); err != nil {
				t.Fatalf("Verify: %v\n%s", err, signed)
			}
			if _, err := Verify(tamperBody(t, signed), VerifyOptions{Roots: p.roots()}); err == nil {
				t.Fatal("Verify accepted a tampered body")
			}
		})
	}
}
