// Package netfail says what a network or TLS failure was, once, for every
// client in mtlsrelay that makes connections: the executor (package
// outbound) calling partners, and the secret providers calling Vault and
// CyberArk. Each words its own message for the kind; none matches error
// text it did not write.
package netfail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"syscall"
)

// Kind is what a connection's failure was.
type Kind int

// The kinds, in the order Classify tests them: the first that matches wins.
const (
	// Other is none of the kinds below.
	Other Kind = iota
	// Canceled: the caller's context was canceled.
	Canceled
	// NameMismatch: the server's certificate is not valid for the name dialed.
	NameMismatch
	// Untrusted: the server's chain does not verify (unknown authority,
	// an invalid certificate, no system roots).
	Untrusted
	// Alert: the peer sent a TLS alert (Failure.Alert).
	Alert
	// NotTLS: the peer does not speak TLS (or spoke plain HTTP).
	NotTLS
	// Timeout: a deadline passed.
	Timeout
	// DNS: the host name did not resolve (Failure.Name).
	DNS
	// Refused: the peer refused the connection.
	Refused
	// Unreachable: no route to the host or its network.
	Unreachable
	// Closed: the peer reset or closed the connection without an answer.
	Closed
	// Dial: another failure to connect.
	Dial
	// LocalTLS: crypto/tls refused the handshake on this side (no common
	// version or cipher suite, a bad local setting).
	LocalTLS
)

var kindNames = [...]string{"other", "canceled", "name_mismatch", "untrusted", "alert", "not_tls", "timeout", "dns", "refused", "unreachable", "closed", "dial", "local_tls"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Failure is what Classify found.
type Failure struct {
	Kind Kind
	// Alert is the TLS alert the peer sent, for Kind Alert.
	Alert uint8
	// Name is the host name looked up, for Kind DNS.
	Name string
}

// Classify says what err, returned by a dial, a TLS handshake or an HTTP
// exchange, was.
func Classify(err error) Failure {
	var (
		hostErr *x509.HostnameError
		uaErr   *x509.UnknownAuthorityError
		invErr  *x509.CertificateInvalidError
		sysErr  *x509.SystemRootsError
		cvErr   *tls.CertificateVerificationError
		rhErr   *tls.RecordHeaderError
		dnsErr  *net.DNSError
		opErr   *net.OpError
	)
	switch {
	case err == nil:
		return Failure{}
	case errors.Is(err, context.Canceled):
		return Failure{Kind: Canceled}
	case asValue(err, &hostErr):
		return Failure{Kind: NameMismatch}
	case asValue(err, &uaErr), asValue(err, &invErr), asValue(err, &sysErr), errors.As(err, &cvErr):
		return Failure{Kind: Untrusted}
	}
	if code, ok := RemoteAlert(err); ok {
		return Failure{Kind: Alert, Alert: code}
	}
	switch {
	case asValue(err, &rhErr), errors.Is(err, http.ErrSchemeMismatch):
		return Failure{Kind: NotTLS}
	case IsTimeout(err):
		return Failure{Kind: Timeout}
	case errors.As(err, &dnsErr):
		return Failure{Kind: DNS, Name: dnsErr.Name}
	case errors.Is(err, syscall.ECONNREFUSED):
		return Failure{Kind: Refused}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return Failure{Kind: Unreachable}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Failure{Kind: Closed}
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return Failure{Kind: Dial}
	case isLocalTLSError(err):
		return Failure{Kind: LocalTLS}
	}
	return Failure{Kind: Other}
}

// asValue is errors.As for the x509 and tls error types that travel as
// values, not pointers: *target is set to a copy when err holds one.
func asValue[T any](err error, target **T) bool {
	var v T
	if errors.As(err, &v) {
		*target = &v
		return true
	}
	return false
}

// RemoteAlert returns the TLS alert a peer sent, if err carries one.
func RemoteAlert(err error) (uint8, bool) {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return uint8(ae), true
	}
	// crypto/tls reports an alert it received as a *net.OpError "remote
	// error" around its unexported alert type, a uint8, which it exports
	// no way to read (tls.AlertError wraps only the alerts QUIC sends): its
	// kind and package are the one sure sign.
	var op *net.OpError
	for e := err; errors.As(e, &op); e = op.Err {
		if op.Op == "remote error" && op.Err != nil {
			v := reflect.ValueOf(op.Err)
			if v.Kind() == reflect.Uint8 && v.Type().PkgPath() == "crypto/tls" {
				return uint8(v.Uint()), true
			}
		}
		if op.Err == nil {
			break
		}
	}
	// Some layers keep only the text: "... remote error: tls: <name>".
	s := err.Error()
	if i := strings.LastIndex(s, "remote error: tls: "); i >= 0 {
		name := s[i+len("remote error: tls: "):]
		if j := strings.IndexAny(name, ";)\n"); j >= 0 {
			name = name[:j]
		}
		if code, ok := alertByName[strings.TrimSpace(name)]; ok {
			return code, true
		}
	}
	return 0, false
}

// alertByName maps the name crypto/tls gives an alert ("unknown
// certificate authority") to its code, for errors that kept only the text.
var alertByName = func() map[string]uint8 {
	m := make(map[string]uint8, 40)
	for i := range 256 {
		if s := AlertName(uint8(i)); !strings.HasPrefix(s, "alert(") {
			m[s] = uint8(i)
		}
	}
	return m
}()

// AlertName is the name of TLS alert code, as crypto/tls writes it
// ("bad_certificate", "certificate_required").
func AlertName(code uint8) string {
	return strings.TrimPrefix(tls.AlertError(code).Error(), "tls: ")
}

// IsTimeout reports whether err is a deadline that passed.
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isLocalTLSError reports whether err comes from crypto/tls refusing the
// handshake on this side, before or without an alert from the peer.
func isLocalTLSError(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.HasPrefix(e.Error(), "tls: ") {
			return true
		}
	}
	return false
}

// RootCause is the innermost error err wraps, whose type names a failure
// without its text.
func RootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
