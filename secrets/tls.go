package secrets

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Material is what a call needs from a profile: a ready client tls.Config
// and what identifies it. A Material is never modified once returned; a
// changed secret yields a new Material, so calls in flight finish with the
// one they started with. Materials are shared between callers: treat every
// field as read-only and Clone the Config before changing it (http.Transport
// clones it by itself).
type Material struct {
	// Profile is the profile's name.
	Profile string
	// Config is the client configuration: one client certificate, RootCAs
	// from the truststore (nil means the system roots), MinVersion,
	// Renegotiation, ServerName only when the profile sets server_name (an
	// HTTP transport fills it from the URL's host otherwise) and an LRU
	// ClientSessionCache so connections resume. GetClientCertificate offers
	// the certificate even when the server's list of acceptable CAs does not
	// name its issuer, as OpenSSL and Java clients do: many servers list CAs
	// loosely, and the server is the one to decide. When the profile's
	// revocation is prefer or require, VerifyConnection checks the
	// partner's certificate by OCSP and CRL (see RevocationChecker) and
	// fails the handshake with a *jobs.Error of CodeServerCertRevoked.
	Config *tls.Config
	// Leaf is the client certificate presented.
	Leaf *x509.Certificate
	// Version changes whenever the profile's definition or any of its
	// secrets changed; keying connection pools on Profile+Version retires
	// connections made with an old certificate.
	Version string
}

// build decodes a profile's fetched secrets into a Material. Errors are
// prefixed with the profile and the reference that failed.
func (r *Resolver) build(name string, p Profile, refs profileRefs, got map[Ref]Secret, version string) (*Material, error) {
	password := passwordBytes(got, refs.password)
	defer clear(password)
	data := got[refs.keystore].Data
	if !refs.key.IsZero() {
		joined, field, err := joinKey(data, got[refs.key].Data)
		if err != nil {
			ref := refs.keystore
			if field == "key" {
				ref = refs.key
			}
			return nil, profileError(err, name, field, ref)
		}
		data = joined
		defer clear(data)
	}
	ks, err := DecodeKeystore(data, password)
	if err != nil {
		return nil, profileError(err, name, "keystore", refs.keystore)
	}
	cert, err := ks.ClientCertificate(p.KeyAlias)
	if err != nil {
		return nil, profileError(err, name, "keystore", refs.keystore)
	}
	var roots *x509.CertPool
	if !refs.truststore.IsZero() {
		tsPassword := passwordBytes(got, refs.truststorePassword)
		defer clear(tsPassword)
		if roots, _, err = DecodeTruststore(got[refs.truststore].Data, tsPassword); err != nil {
			return nil, profileError(err, name, "truststore", refs.truststore)
		}
	}
	// parse has checked both settings already.
	minVersion, _ := p.minVersion()
	renegotiation, _ := p.renegotiation()
	cfg := &tls.Config{
		Certificates:       []tls.Certificate{cert},
		RootCAs:            roots,
		MinVersion:         minVersion,
		Renegotiation:      renegotiation,
		ServerName:         p.ServerName,
		ClientSessionCache: tls.NewLRUClientSessionCache(0),
		// Revocation of the partner's certificate (revocation: prefer or
		// require; nil when off): see revocation.go.
		VerifyConnection: defaultRevocation.VerifyConnection(name, p.Revocation),
	}
	PresentAlways(cfg)
	return &Material{Profile: name, Config: cfg, Leaf: cert.Leaf, Version: version}, nil
}

// joinKey returns a PEM certificate chain and its PEM private key, kept in
// two places, as one PEM bundle; an error names the field at fault.
func joinKey(chain, key []byte) ([]byte, string, error) {
	if f := detectFormat(chain); f != FormatPEM {
		if f == "" {
			f = "not a keystore"
		}
		return nil, "keystore", jobs.Errorf(jobs.CodeKeystoreInvalid,
			"key is set, so the keystore must be a PEM certificate chain, but it is %s; remove key, or point keystore at the PEM certificate file", strings.ToUpper(f))
	}
	if !bytes.Contains(key, []byte("PRIVATE KEY-----")) {
		return nil, "key", jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the key is not a PEM private key (-----BEGIN PRIVATE KEY-----, or ENCRYPTED, RSA or EC PRIVATE KEY); point key at the PEM key file")
	}
	out := make([]byte, 0, len(chain)+1+len(key))
	out = append(append(append(out, chain...), '\n'), key...)
	return out, "", nil
}

// passwordBytes returns a copy of the password secret of ref, without one
// trailing newline, or nil when the profile names no password.
func passwordBytes(got map[Ref]Secret, ref Ref) []byte {
	if ref.IsZero() {
		return nil
	}
	pw := got[ref].Data
	pw = bytes.TrimSuffix(pw, []byte("\n"))
	pw = bytes.TrimSuffix(pw, []byte("\r"))
	return bytes.Clone(pw)
}

// materialVersion derives a Material's Version from the profile's name,
// definition and secret versions. Secret versions are keyed hashes already,
// so this hash reveals nothing either.
func materialVersion(name string, p Profile, versions []string) string {
	h := sha256.New()
	def, _ := p.MarshalUnredactedJSON()
	fmt.Fprintf(h, "%q\n%s\n", name, def)
	for _, v := range versions {
		fmt.Fprintf(h, "%s\n", v)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// PresentAlways makes cfg offer its first certificate whatever CA names the
// server lists in its CertificateRequest, as OpenSSL, curl and Java clients
// do. Go would otherwise send no certificate when the list omits its
// issuer, and the server's refusal would hide the real mismatch; servers
// (IIS, say) often list CAs loosely. Without a certificate, or with
// GetClientCertificate set, it changes nothing.
func PresentAlways(cfg *tls.Config) {
	if len(cfg.Certificates) == 0 || cfg.GetClientCertificate != nil {
		return
	}
	cert := cfg.Certificates[0]
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &cert, nil
	}
}

// CheckValidity fails when leaf, the client certificate of profile, is
// outside its validity window at now: sending it would only earn a
// handshake failure, and a vaguer alert. A nil leaf passes. It is the one
// check of a client certificate's dates: the Resolver makes it when it
// hands out material, the executor before each attempt (a certificate
// cached while valid may expire later), the CyberArk client for its own.
func CheckValidity(profile string, leaf *x509.Certificate, now time.Time) *jobs.Error {
	switch {
	case leaf == nil:
		return nil
	case now.After(leaf.NotAfter):
		return jobs.Errorf(jobs.CodeClientCertExpired,
			"client certificate CN=%s (serial %s) of profile %q expired at %s; renew it and update the keystore",
			leaf.Subject.CommonName, SerialHex(leaf), profile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return jobs.Errorf(jobs.CodeClientCertNotYetValid,
			"client certificate CN=%s (serial %s) of profile %q is not valid before %s; check the worker's clock, or use a certificate that is valid now",
			leaf.Subject.CommonName, SerialHex(leaf), profile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}
