package secrets

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// SOAPSettings are the SOAP settings of a profile or a connection.
type SOAPSettings struct {
	// WSS, when set, signs every SOAP request with WS-Security (an X.509
	// signature made with the profile's key). A connection's wss replaces
	// its profile's whole.
	WSS *WSS `yaml:"wss,omitempty" json:"wss,omitempty"`
}

// WSS says how SOAP requests are signed with WS-Security: a wsse:Security
// header with a BinarySecurityToken (the profile's certificate), a
// wsu:Timestamp and an XML signature (exclusive C14N, SHA-256, RSA or
// ECDSA by the key's type) over the Body, the Timestamp and the named
// header blocks. The key and certificate are the profile's, resolved for
// each call, so a rotated keystore signs the next call.
type WSS struct {
	// TimestampTTL is the lifetime of the wsu:Timestamp, a Go duration
	// ("5m"). Default 5m.
	TimestampTTL string `yaml:"timestamp_ttl,omitempty" json:"timestamp_ttl,omitempty"`
	// SignHeaders names SOAP header blocks to sign besides Body and
	// Timestamp, as "{namespace}local" (Clark notation). A call whose
	// soap.header lacks one ends invalid_call.
	SignHeaders []string `yaml:"sign_headers,omitempty" json:"sign_headers,omitempty"`
	// VerifyResponse checks the WS-Security signature of 2xx responses
	// that are not faults: it must cover the Body (and the Timestamp, if
	// there is one, which must not have expired) and be made by a
	// certificate the profile's truststore (else the system roots)
	// trusts. A response that fails ends soap_signature_invalid.
	VerifyResponse bool `yaml:"verify_response,omitempty" json:"verify_response,omitempty"`
	// VerifySigner, with verify_response, names the certificates whose
	// signatures are accepted: "sha256:<hex>" (the certificate's SHA-256
	// fingerprint, colons allowed), "cn:<name>" (the subject's common
	// name) or "dns:<name>" (a DNS subject alternative name); any one
	// matching is enough. The signer must still chain to the truststore.
	// Required when the profile has no truststore: the system roots alone
	// would accept a signature by any publicly trusted certificate.
	VerifySigner []string `yaml:"verify_signer,omitempty" json:"verify_signer,omitempty"`
}

// SignerAccepted reports whether cert is one VerifySigner names; true
// when VerifySigner is empty.
func (w *WSS) SignerAccepted(cert *x509.Certificate) bool {
	if w == nil || len(w.VerifySigner) == 0 {
		return true
	}
	fp := sha256.Sum256(cert.Raw)
	for _, s := range w.VerifySigner {
		kind, v, _ := strings.Cut(s, ":")
		switch strings.ToLower(kind) {
		case "sha256":
			want, err := hex.DecodeString(strings.ReplaceAll(v, ":", ""))
			if err == nil && subtle.ConstantTimeCompare(want, fp[:]) == 1 {
				return true
			}
		case "cn":
			if cert.Subject.CommonName == v {
				return true
			}
		case "dns":
			for _, n := range cert.DNSNames {
				if strings.EqualFold(n, v) {
					return true
				}
			}
		}
	}
	return false
}

// ValidateTrust checks what Validate cannot see alone: verify_response on
// a profile without a truststore needs verify_signer. hasTruststore says
// whether the profile (the connection's profile, for a connection's
// soap.wss) has one.
func (s *SOAPSettings) ValidateTrust(where string, hasTruststore bool) error {
	if s == nil || s.WSS == nil || !s.WSS.VerifyResponse || hasTruststore || len(s.WSS.VerifySigner) > 0 {
		return nil
	}
	return fmt.Errorf("%s: soap.wss.verify_response on a profile without a truststore needs soap.wss.verify_signer (the system roots alone would accept a message signature by any publicly trusted certificate)", where)
}

// DefaultTimestampTTL is the lifetime of a WS-Security Timestamp when
// timestamp_ttl is not set.
const DefaultTimestampTTL = 5 * time.Minute

// TTL returns the Timestamp lifetime (Validate has checked it parses).
func (w *WSS) TTL() time.Duration {
	if w == nil || w.TimestampTTL == "" {
		return DefaultTimestampTTL
	}
	d, err := time.ParseDuration(w.TimestampTTL)
	if err != nil || d <= 0 {
		return DefaultTimestampTTL
	}
	return d
}

// Validate checks the settings; where names the owner ("profile p").
func (s *SOAPSettings) Validate(where string) error {
	if s == nil || s.WSS == nil {
		return nil
	}
	w := s.WSS
	if w.TimestampTTL != "" {
		d, err := time.ParseDuration(w.TimestampTTL)
		if err != nil || d < time.Second || d > 24*time.Hour {
			return fmt.Errorf("%s: soap.wss.timestamp_ttl %q must be a duration from 1s to 24h, such as 5m", where, w.TimestampTTL)
		}
	}
	for _, h := range w.SignHeaders {
		if _, _, err := ParseClarkName(h); err != nil {
			return fmt.Errorf("%s: soap.wss.sign_headers: %v", where, err)
		}
	}
	if len(w.VerifySigner) > 0 && !w.VerifyResponse {
		return fmt.Errorf("%s: soap.wss.verify_signer is set but verify_response is not; set verify_response: true", where)
	}
	for _, v := range w.VerifySigner {
		kind, val, _ := strings.Cut(v, ":")
		switch strings.ToLower(kind) {
		case "sha256":
			b, err := hex.DecodeString(strings.ReplaceAll(val, ":", ""))
			if err != nil || len(b) != sha256.Size {
				return fmt.Errorf("%s: soap.wss.verify_signer %q: a fingerprint is sha256: and 64 hex digits", where, v)
			}
		case "cn", "dns":
			if strings.TrimSpace(val) == "" {
				return fmt.Errorf("%s: soap.wss.verify_signer %q names no %s", where, v, kind)
			}
		default:
			return fmt.Errorf("%s: soap.wss.verify_signer %q: use sha256:<fingerprint>, cn:<common name> or dns:<DNS name>", where, v)
		}
	}
	return nil
}

// ParseClarkName splits "{namespace}local" into its namespace and local
// name.
func ParseClarkName(s string) (space, local string, err error) {
	rest, ok := strings.CutPrefix(s, "{")
	if !ok {
		return "", "", fmt.Errorf("%q must be {namespace}local, e.g. {http://www.w3.org/2005/08/addressing}To", s)
	}
	space, local, ok = strings.Cut(rest, "}")
	if !ok || space == "" || local == "" || strings.ContainsAny(local, "{}:<> ") {
		return "", "", fmt.Errorf("%q must be {namespace}local, e.g. {http://www.w3.org/2005/08/addressing}To", s)
	}
	return space, local, nil
}
