package outbound

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound/wss"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// TestVerifyResponseSignerRules: verify_signer pins the partner's signing
// certificate; without a truststore it is required (system roots alone
// are refused); the profile's own certificate (a reflected request) is
// refused; an empty 2xx body (a one-way operation) passes unverified.
func TestVerifyResponseSignerRules(t *testing.T) {
	ca, err := pki.NewCA("wss CA")
	if err != nil {
		t.Fatal(err)
	}
	partner, err := ca.Issue(pki.LeafOptions{CommonName: "partner-signer", DNSNames: []string{"sign.partner.example"}})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	env := []byte(`<soap:Envelope xmlns:soap="` + SOAP11Namespace + `"><soap:Body><r xmlns="urn:r">ok</r></soap:Body></soap:Envelope>`)
	signedBy := func(l *pki.Leaf) []byte {
		b, err := wss.Sign(env, l.Cert, l.Key, wss.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withTrust := &secrets.Material{Profile: "p", Config: &tls.Config{RootCAs: ca.Pool()}, Leaf: relay.Cert}
	noTrust := &secrets.Material{Profile: "p", Config: &tls.Config{}, Leaf: relay.Cert}
	fp := sha256.Sum256(partner.Cert.Raw)
	call := &jobs.Call{ID: "c1", Connection: "gw"}
	tests := []struct {
		name string
		body []byte
		w    *secrets.WSS
		mat  *secrets.Material
		want string // "" for success
	}{
		{"trusted, no pin", signedBy(partner), &secrets.WSS{VerifyResponse: true}, withTrust, ""},
		{"pinned by fingerprint", signedBy(partner), &secrets.WSS{VerifyResponse: true, VerifySigner: []string{"sha256:" + hex.EncodeToString(fp[:])}}, withTrust, ""},
		{"pinned by cn", signedBy(partner), &secrets.WSS{VerifyResponse: true, VerifySigner: []string{"cn:partner-signer"}}, withTrust, ""},
		{"pinned by dns", signedBy(partner), &secrets.WSS{VerifyResponse: true, VerifySigner: []string{"dns:sign.partner.example"}}, withTrust, ""},
		{"another signer than pinned", signedBy(partner), &secrets.WSS{VerifyResponse: true, VerifySigner: []string{"cn:someone-else"}}, withTrust, "not one soap.wss.verify_signer names"},
		{"no truststore, no pin", signedBy(partner), &secrets.WSS{VerifyResponse: true}, noTrust, "no truststore"},
		{"no truststore, nil settings", signedBy(partner), nil, noTrust, "no truststore"},
		{"reflected request", signedBy(relay), &secrets.WSS{VerifyResponse: true}, withTrust, "own certificate"},
		{"empty body", []byte(" \n"), &secrets.WSS{VerifyResponse: true}, withTrust, ""},
		{"unsigned", env, &secrets.WSS{VerifyResponse: true}, withTrust, "no wsse:Security"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jerr := verifyResponseWSS(call, "gw.example", tt.body, tt.w, tt.mat)
			if tt.want == "" {
				if jerr != nil {
					t.Fatalf("err %v", jerr)
				}
				return
			}
			if jerr == nil || jerr.Code != jobs.CodeSOAPSignatureInvalid || !strings.Contains(jerr.Message, tt.want) {
				t.Fatalf("err %v, want soap_signature_invalid with %q", jerr, tt.want)
			}
		})
	}
}
