package secrets

import (
	"strings"
	"testing"
)

func TestWSSVerifySignerValidation(t *testing.T) {
	fp := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name string
		w    WSS
		want string
	}{
		{"fingerprint", WSS{VerifyResponse: true, VerifySigner: []string{fp}}, ""},
		{"fingerprint with colons", WSS{VerifyResponse: true, VerifySigner: []string{"sha256:" + strings.TrimSuffix(strings.Repeat("AB:", 32), ":")}}, ""},
		{"cn and dns", WSS{VerifyResponse: true, VerifySigner: []string{"cn:gw", "dns:gw.example"}}, ""},
		{"short fingerprint", WSS{VerifyResponse: true, VerifySigner: []string{"sha256:abcd"}}, "64 hex digits"},
		{"unknown kind", WSS{VerifyResponse: true, VerifySigner: []string{"issuer:x"}}, "use sha256:"},
		{"empty cn", WSS{VerifyResponse: true, VerifySigner: []string{"cn:"}}, "names no cn"},
		{"signer without verify_response", WSS{VerifySigner: []string{"cn:gw"}}, "verify_response is not"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&SOAPSettings{WSS: &tt.w}).Validate("profile p")
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	s := &SOAPSettings{WSS: &WSS{VerifyResponse: true}}
	if err := s.ValidateTrust("profile p", false); err == nil || !strings.Contains(err.Error(), "verify_signer") {
		t.Fatalf("verify_response without truststore or verify_signer: %v", err)
	}
	if err := s.ValidateTrust("profile p", true); err != nil {
		t.Fatal(err)
	}
	s.WSS.VerifySigner = []string{"cn:gw"}
	if err := s.ValidateTrust("profile p", false); err != nil {
		t.Fatal(err)
	}
}
