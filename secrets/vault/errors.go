package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/mtlsrelay/mtlsrelay/internal/netfail"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// op describes a request to Vault for the messages of classify, so a
// person knows which path to check.
type op struct {
	// doing says what the worker was doing, after "while": "reading KV
	// secret secret/partners/a", "issuing a certificate from PKI role
	// pki/issue/client".
	doing string
	// path is the API path requested, e.g. "secret/data/partners/a".
	path string
	// capability is the policy capability the request needs: "read" or
	// "update".
	capability string
}

// classify turns an error of the Vault API client into a *jobs.Error,
// deciding once for every request whether it is worth retrying:
//
//   - Vault unreachable (connection refused, DNS, TLS, timeout), 5xx
//     (sealed, standby, internal error), 429 and 412: secret_unavailable,
//     retryable.
//   - 403: secret_unavailable, not retryable: the token's policy lacks
//     the capability on the path (or the token is no longer valid).
//   - 404: secret_unavailable, not retryable, wrapping secrets.ErrNotFound.
//   - 400 and other 4xx: keystore_invalid: Vault refused the request as
//     written (a PKI role that does not allow the common name, say).
//
// The message names Vault's address, the path and what to check; it never
// holds the token or a secret value (Vault's own error strings are added for
// 4xx answers, which echo no credentials).
func classify(err error, addr string, o op) *jobs.Error {
	var je *jobs.Error
	if errors.As(err, &je) {
		return je
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		return classifyResponse(re, addr, o)
	}
	if errors.Is(err, context.Canceled) {
		return jobs.Wrap(err, jobs.CodeCanceled, "canceled while %s from Vault at %s", o.doing, addr)
	}
	return jobs.Wrap(err, jobs.CodeSecretUnavailable,
		"Vault at %s is unreachable (%s) while %s; calls are retried, and profiles already loaded keep working; check that Vault is up and reachable from the worker",
		addr, netReason(err), o.doing).WithRetryable(true)
}

// classifyResponse classifies an HTTP error answer of Vault.
func classifyResponse(re *api.ResponseError, addr string, o op) *jobs.Error {
	said := vaultSaid(re)
	switch code := re.StatusCode; {
	case code == http.StatusForbidden:
		return jobs.Wrap(re, jobs.CodeSecretUnavailable,
			"Vault at %s denied %s (HTTP 403 permission denied): the token's policy lacks %q on path %q, or the token is no longer valid; grant it in the policy of the worker's Vault role",
			addr, o.doing, o.capability, o.path).WithRetryable(false)
	case code == http.StatusNotFound:
		return jobs.Wrap(errors.Join(secrets.ErrNotFound, re), jobs.CodeSecretUnavailable,
			"Vault at %s found nothing while %s (HTTP 404 at %s%s); check the reference's mount and path", addr, o.doing, o.path, said).WithRetryable(false)
	case code == http.StatusServiceUnavailable:
		return jobs.Wrap(re, jobs.CodeSecretUnavailable,
			"Vault at %s is unavailable (HTTP 503: sealed, in standby or overloaded%s) while %s; calls are retried, and profiles already loaded keep working",
			addr, said, o.doing).WithRetryable(true)
	case code >= 500, code == http.StatusTooManyRequests, code == http.StatusPreconditionFailed:
		return jobs.Wrap(re, jobs.CodeSecretUnavailable,
			"Vault at %s answered HTTP %d%s while %s; calls are retried, and profiles already loaded keep working",
			addr, code, said, o.doing).WithRetryable(true)
	default:
		return jobs.Wrap(re, jobs.CodeKeystoreInvalid,
			"Vault at %s refused %s (HTTP %d%s); check the reference", addr, o.doing, code, said)
	}
}

// vaultSaid quotes Vault's own error strings, briefly.
func vaultSaid(re *api.ResponseError) string {
	if len(re.Errors) == 0 || re.RawError {
		return ""
	}
	s := strings.Join(re.Errors, "; ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return ": " + s
}

// netReason names the kind of a transport failure (netfail) without
// echoing the error's text.
func netReason(err error) string {
	f := netfail.Classify(err)
	switch f.Kind {
	case netfail.Timeout:
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			return fmt.Sprintf("DNS lookup of %s timed out", dnsErr.Name)
		}
		return "no answer before the deadline"
	case netfail.Refused:
		return "connection refused"
	case netfail.Closed:
		return "connection reset"
	case netfail.Unreachable:
		return "no route to host"
	case netfail.DNS:
		return fmt.Sprintf("DNS lookup of %s failed", f.Name)
	case netfail.NameMismatch:
		return "its TLS certificate is not valid for that host name; check vault.address"
	case netfail.Untrusted:
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) {
			return "its TLS certificate is invalid (expired?)"
		}
		return "its TLS certificate is signed by an unknown authority; set vault.ca_cert"
	case netfail.NotTLS:
		return "it does not speak TLS; use http:// in vault.address, or https:// if it does"
	case netfail.Alert:
		return fmt.Sprintf("it refused the TLS handshake (alert %q); check vault.auth's client certificate", netfail.AlertName(f.Alert))
	}
	return fmt.Sprintf("%T", netfail.RootCause(err))
}
