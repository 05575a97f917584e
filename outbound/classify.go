package outbound

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/netfail"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Target describes what a failed attempt was talking to, so that
// ClassifyError can write a message a person can act on. Zero fields are
// left out of the message.
type Target struct {
	// Host is the partner's host:port.
	Host string
	// Profile names the mTLS profile whose certificate was presented.
	Profile string
	// SystemRoots is true when the profile has no truststore, so the
	// system's roots verified the server.
	SystemRoots bool
	// Timeout is the attempt's deadline.
	Timeout time.Duration
	// Phase is where the attempt was when it failed: one of the Phase
	// constants, or "".
	Phase string
	// TLSVersion is the version negotiated on the failing connection, 0 when
	// no handshake completed.
	TLSVersion uint16
	// FreshConn is true when the failing connection was opened for this
	// attempt rather than reused from the pool.
	FreshConn bool
}

// Phases of an attempt, for Target.Phase.
const (
	PhaseDNS      = "resolving the host name"
	PhaseConnect  = "connecting"
	PhaseTLS      = "in the TLS handshake"
	PhaseResponse = "waiting for the response"
	PhaseBody     = "reading the response body"
)

// clientCertAlerts are the TLS alerts by which a server refuses the client's
// certificate.
var clientCertAlerts = map[uint8]string{
	42:  "it found the certificate bad (bad_certificate)",
	43:  "it does not support that kind of certificate (unsupported_certificate)",
	44:  "the certificate is revoked (certificate_revoked)",
	45:  "the certificate has expired (certificate_expired)",
	46:  "it could not verify the certificate (certificate_unknown)",
	48:  "it does not trust the CA that issued the certificate (unknown_ca)",
	49:  "the certificate is valid but not allowed access (access_denied)",
	116: "it requires a client certificate and got none (certificate_required)",
}

// ClassifyError maps a failure of an HTTP exchange over mTLS to a stable
// error code with a message naming the host and what to check. The message
// is built from the error's type and the target, never from the request's
// content. An error that already is a *jobs.Error is returned as it is.
func ClassifyError(err error, t Target) *jobs.Error {
	if err == nil {
		return nil
	}
	var je *jobs.Error
	if errors.As(err, &je) {
		return je
	}
	host := t.Host
	if host == "" {
		host = "the partner"
	}
	profile := t.Profile

	f := netfail.Classify(err)
	switch f.Kind {
	case netfail.Canceled:
		return jobs.Wrap(err, jobs.CodeCanceled,
			"the call to %s was canceled%s before it completed (the worker is shutting down or the caller gave up)", host, phaseSuffix(t.Phase))

	// Certificate verification of the server, done by us.
	case netfail.NameMismatch:
		var hostErr x509.HostnameError
		errors.As(err, &hostErr)
		return jobs.Wrap(err, jobs.CodeServerNameMismatch,
			"the server certificate of %s is valid for %s, not for %q; call the partner by one of those names, or set server_name in profile %s to the name the partner told you",
			host, certNames(hostErr.Certificate), hostErr.Host, profile)
	case netfail.Untrusted:
		var uaErr x509.UnknownAuthorityError
		var invErr x509.CertificateInvalidError
		var sysErr x509.SystemRootsError
		switch {
		case errors.As(err, &uaErr):
			issuer := "an unknown issuer"
			if uaErr.Cert != nil {
				issuer = fmt.Sprintf("%q", uaErr.Cert.Issuer.String())
			}
			return jobs.Wrap(err, jobs.CodeServerCertUntrusted,
				"the server certificate chain of %s (issued by %s) does not lead to a CA in %s; add the partner's CA certificate to the profile's truststore",
				host, issuer, truststoreName(profile, t.SystemRoots))
		case errors.As(err, &invErr):
			return jobs.Wrap(err, jobs.CodeServerCertUntrusted,
				"the server certificate of %s is not acceptable: %s", host, describeInvalid(invErr))
		case errors.As(err, &sysErr):
			return jobs.Wrap(err, jobs.CodeServerCertUntrusted,
				"the worker has no system root CAs to verify %s; set a truststore in profile %s", host, profile)
		}
		return jobs.Wrap(err, jobs.CodeServerCertUntrusted,
			"the server certificate of %s failed verification against %s; check the partner's chain and the profile's truststore",
			host, truststoreName(profile, t.SystemRoots))

	// Alerts sent by the server.
	case netfail.Alert:
		code := f.Alert
		if why, ok := clientCertAlerts[code]; ok {
			return jobs.Wrap(err, jobs.CodeClientCertRejected,
				"%s refused the client certificate of profile %s: %s; ask the partner which CA and subject they accept and check the profile's keystore",
				host, profile, why)
		}
		hint := "check the profile's min_tls_version and that the partner expects this client"
		switch code {
		case 70: // protocol_version
			hint = "the worker and the partner share no TLS version; check the profile's min_tls_version and the partner's TLS settings"
		case 40: // handshake_failure
			hint = "no cipher suite or signature algorithm in common, or the partner wants a client certificate it did not get; check the partner's TLS settings and the profile's keystore"
		case 112: // unrecognized_name
			hint = "the partner does not serve that host name; check the connection's base_url host or the profile's server_name"
		}
		return jobs.Wrap(err, jobs.CodeTLSHandshakeFailed,
			"the TLS handshake with %s failed: the partner sent the alert %q; %s", host, netfail.AlertName(code), hint)
	case netfail.NotTLS:
		return jobs.Wrap(err, jobs.CodeTLSHandshakeFailed,
			"%s did not answer with TLS; check that the connection's base_url names the partner's HTTPS port", host)

	case netfail.Timeout:
		after := ""
		if t.Timeout > 0 {
			after = " within " + t.Timeout.String()
		}
		return jobs.Wrap(err, jobs.CodeTimeout,
			"%s did not complete the call%s (timed out%s); check that the partner is up and reachable, or raise the connection's timeout or the call's timeout_ms",
			host, after, phaseSuffix(t.Phase))

	case netfail.DNS:
		what := "failed"
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			what = "found no such host"
		} else if dnsErr != nil && dnsErr.IsTemporary {
			what = "failed temporarily"
		}
		return jobs.Wrap(err, jobs.CodeConnectFailed,
			"DNS lookup of %q %s; check the host name in the connection's base_url or the call's url, and the worker's DNS", f.Name, what)
	case netfail.Refused:
		return jobs.Wrap(err, jobs.CodeConnectFailed,
			"%s refused the connection; check that the partner listens on that port and that no firewall rejects the worker", host)
	case netfail.Unreachable:
		return jobs.Wrap(err, jobs.CodeConnectFailed,
			"%s is unreachable from this worker; check the network route and firewalls between them", host)
	case netfail.Closed:
		msg := fmt.Sprintf("%s closed the connection%s without an answer", host, phaseSuffix(t.Phase))
		if t.Phase == PhaseTLS || (t.FreshConn && t.TLSVersion == tls.VersionTLS13 && t.Phase == PhaseResponse) {
			// In TLS 1.3 a server checks the client certificate after the
			// handshake; one that drops the connection instead of sending
			// an alert looks like this.
			msg += fmt.Sprintf("; if this repeats, the partner may be refusing the client certificate of profile %s: ask which CA and subject they accept", profile)
		} else {
			msg += "; check the partner's logs and any load balancer in between"
		}
		return jobs.Wrap(err, jobs.CodeConnectFailed, "%s", msg)
	case netfail.Dial:
		return jobs.Wrap(err, jobs.CodeConnectFailed,
			"could not connect to %s; check the host and port and the network between the worker and the partner", host)
	case netfail.LocalTLS:
		return jobs.Wrap(err, jobs.CodeTLSHandshakeFailed,
			"the TLS handshake with %s failed (%s); check the profile's TLS settings against the partner's", host, tlsErrorText(err))
	}
	return jobs.Wrap(err, jobs.CodeInternal,
		"unexpected failure calling %s (%T)%s; see the worker log for this call id", host, netfail.RootCause(err), phaseSuffix(t.Phase))
}

func phaseSuffix(phase string) string {
	if phase == "" {
		return ""
	}
	return " while " + phase
}

func truststoreName(profile string, system bool) string {
	if system {
		return fmt.Sprintf("the system roots (profile %s has no truststore)", profile)
	}
	return fmt.Sprintf("profile %s's truststore", profile)
}

// certNames lists the names a certificate is valid for.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "other names"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		if c.Subject.CommonName != "" {
			return fmt.Sprintf("no names (its subject CN %q is not used for name checks)", c.Subject.CommonName)
		}
		return "no names"
	}
	const max = 10
	if len(names) > max {
		names = append(names[:max], fmt.Sprintf("and %d more", len(names)-max))
	}
	return "[" + strings.Join(names, ", ") + "]"
}

func describeInvalid(e x509.CertificateInvalidError) string {
	switch e.Reason {
	case x509.Expired:
		if e.Cert != nil {
			now := time.Now()
			if now.Before(e.Cert.NotBefore) {
				return fmt.Sprintf("it is not valid before %s; the partner must fix it, or check the worker's clock", e.Cert.NotBefore.UTC().Format(time.RFC3339))
			}
			return fmt.Sprintf("it expired at %s; the partner must renew it, or check the worker's clock", e.Cert.NotAfter.UTC().Format(time.RFC3339))
		}
		return "it has expired or is not yet valid; the partner must renew it, or check the worker's clock"
	case x509.IncompatibleUsage:
		return "it is not issued for TLS server authentication; the partner must use a server certificate"
	case x509.NotAuthorizedToSign:
		return "a certificate in its chain is not a CA; the partner must serve a correct chain"
	case x509.NameConstraintsWithoutSANs, x509.CANotAuthorizedForThisName, x509.CANotAuthorizedForExtKeyUsage:
		return "its CA is not allowed to issue it (name or usage constraints); the partner must fix the chain"
	case x509.TooManyIntermediates:
		return "its chain is too long"
	default:
		return "its chain is invalid; check the partner's chain and the profile's truststore"
	}
}

// tlsErrorText returns crypto/tls's own description, which names protocol
// features, never request data.
func tlsErrorText(err error) string {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if s := e.Error(); strings.HasPrefix(s, "tls: ") {
			if len(s) > 160 {
				s = s[:160] + "…"
			}
			return s
		}
	}
	return "tls error"
}
