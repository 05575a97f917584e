package cyberark

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"regexp"

	"github.com/mtlsrelay/mtlsrelay/internal/netfail"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// ccpCodePattern is the shape of CyberArk's error codes (APPAP004E,
// AIMWS030E, CASVL010E); anything else the CCP sent is not repeated.
var ccpCodePattern = regexp.MustCompile(`^[A-Z]{4,6}[0-9]{3}[A-Z]$`)

// classify maps a failed GetPassword request to the error the Source
// contract asks for. It is the one place where the CCP's answers and the
// transport's errors are interpreted (see docs/SECRETS-CYBERARK.md):
//
//   - 404 APPAP004E: not found, not retryable, wrapping secrets.ErrNotFound.
//   - 403 (APPAP008E, APPAP306E, or any other code): the AppID is unknown or
//     failed its authentication check; not retryable.
//   - 400 APPAP227E-APPAP229E (several objects match) and other 400s: not
//     retryable; 400 APPAP007E (the CCP cannot reach the Vault): retryable.
//   - 500 APPAP282E (the CPM is changing the password), other 5xx, 408, 429,
//     connection refused, DNS failure, reset, timeout: retryable, "the CCP
//     is unreachable".
//   - TLS: a server certificate we do not trust, or an alert by which the
//     CCP refuses our client certificate: not retryable.
//
// Every failure has code jobs.CodeSecretUnavailable, except a canceled
// request (jobs.CodeCanceled). Messages are built from the status, the
// CCP's error code and the reference, never from the CCP's ErrorMsg.
func (c *Client) classify(loc Locator, f failure) *jobs.Error {
	obj := objectText(loc, c.cfg.Folder)
	code := ""
	if ccpCodePattern.MatchString(f.code) {
		code = f.code
	}
	codeSuffix := ""
	if code != "" {
		codeSuffix = ", " + code
	}
	retry := func(format string, args ...any) *jobs.Error {
		return jobs.Wrap(f.err, jobs.CodeSecretUnavailable, format, args...).WithRetryable(true)
	}
	fail := func(format string, args ...any) *jobs.Error {
		return jobs.Wrap(f.err, jobs.CodeSecretUnavailable, format, args...).WithRetryable(false)
	}
	unreachable := func(why string) *jobs.Error {
		return retry("CCP at %s is unreachable (%s) while fetching %s; cached profiles keep working and the call is retried", c.base, why, obj)
	}

	if f.err != nil {
		return c.classifyTransport(f, obj, unreachable, fail)
	}
	switch {
	case f.badAnswer:
		return fail("CCP at %s answered HTTP 200 with something that is not a GetPassword answer; check that url points at the CCP's AIMWebService", c.base)
	case f.status == http.StatusNotFound && code != "":
		return jobs.Wrap(secrets.ErrNotFound, jobs.CodeSecretUnavailable,
			"CyberArk has no password object %s that AppID %q may read (HTTP 404%s); check the Safe and object names, and that the AppID and the Credential Provider's user are members of Safe %q",
			obj, c.cfg.AppID, codeSuffix, loc.Safe).WithRetryable(false)
	case f.status == http.StatusNotFound:
		return fail("CCP at %s answered HTTP 404 without a CyberArk error code: %s is not the GetPassword web service; check url", c.base, c.endpoint.Path)
	case f.status == http.StatusForbidden && code == "APPAP008E":
		return fail("CyberArk does not know AppID %q (HTTP 403, APPAP008E); check app_id, or have the application defined in CyberArk", c.cfg.AppID)
	case f.status == http.StatusForbidden:
		return fail("CCP at %s refused AppID %q (HTTP 403%s): the application failed CyberArk's authentication check; check the AppID's allowed machines, OS user and client certificate (serial, subject, issuer) in CyberArk against this worker and client_keystore",
			c.base, c.cfg.AppID, codeSuffix)
	case f.status == http.StatusUnauthorized:
		return fail("CCP at %s asked for HTTP authentication (401); mtlsrelay authenticates AppID %q by client certificate and allowed machines only: have the AIMWebService accept them", c.base, c.cfg.AppID)
	case f.status == http.StatusBadRequest && code == "APPAP007E":
		return retry("CCP at %s cannot reach the CyberArk Vault (HTTP 400, APPAP007E) while fetching %s; cached profiles keep working and the call is retried", c.base, obj)
	case f.status == http.StatusBadRequest && (code == "APPAP227E" || code == "APPAP228E" || code == "APPAP229E"):
		return fail("more than one CyberArk password object matches %s (HTTP 400, %s); have the object name made unique in Safe %q", obj, code, loc.Safe)
	case f.status == http.StatusBadRequest:
		return fail("CCP at %s rejected the request for %s as invalid (HTTP 400%s); check app_id and the Safe and object names for characters the CCP does not accept", c.base, obj, codeSuffix)
	case f.status == http.StatusInternalServerError && code == "APPAP282E":
		return retry("CyberArk's CPM is changing the password of %s (HTTP 500, APPAP282E); the call is retried", obj)
	case f.status >= 500, f.status == http.StatusTooManyRequests, f.status == http.StatusRequestTimeout:
		return unreachable(fmt.Sprintf("HTTP %d%s", f.status, codeSuffix))
	}
	return fail("CCP at %s answered HTTP %d%s for %s, which mtlsrelay does not expect; see the worker log", c.base, f.status, codeSuffix, obj)
}

// classifyTransport classifies a request that got no HTTP answer.
func (c *Client) classifyTransport(f failure, obj string, unreachable func(string) *jobs.Error, fail func(string, ...any) *jobs.Error) *jobs.Error {
	err := f.err
	if f.canceled {
		return jobs.Wrap(err, jobs.CodeCanceled, "the request to the CCP at %s for %s was canceled", c.base, obj)
	}
	// The client certificate could not be offered (expired, not yet valid,
	// its keystore unreadable): that failure, not the connection, is what
	// to fix, and it is kept with its code.
	var je *jobs.Error
	if errors.As(err, &je) {
		out := jobs.Wrap(err, je.Code, "the request to the CCP at %s for %s could not offer client_keystore's certificate: %s", c.base, obj, je.Message)
		out.Retryable = je.Retryable
		return out
	}
	nf := netfail.Classify(err)
	switch nf.Kind {
	case netfail.NameMismatch:
		var hostErr x509.HostnameError
		errors.As(err, &hostErr)
		return fail("the server certificate of the CCP at %s is not valid for %q; write url with a name the certificate holds", c.base, hostErr.Host)
	case netfail.Untrusted:
		trust := "the system roots (no truststore is set)"
		if c.cfg.Truststore != "" {
			trust = "the cyberark truststore"
		}
		return fail("the server certificate of the CCP at %s is not trusted by %s; set truststore to the CA that issued the CCP's certificate", c.base, trust)
	case netfail.Alert:
		alert := netfail.AlertName(nf.Alert)
		if c.cfg.ClientKeystore == "" {
			return fail("CCP at %s refused the TLS handshake (alert %q): it requires a client certificate and client_keystore is not set; set client_keystore to the certificate registered for AppID %q",
				c.base, alert, c.cfg.AppID)
		}
		return fail("CCP at %s refused the client certificate of client_keystore (TLS alert %q); check that the CCP's IIS trusts the CA that issued it and that it is the certificate registered for AppID %q",
			c.base, alert, c.cfg.AppID)
	case netfail.NotTLS:
		return fail("CCP at %s did not answer with TLS; check that url names the CCP's HTTPS port", c.base)
	case netfail.Timeout:
		return unreachable(fmt.Sprintf("no answer within %s", c.cfg.Timeout))
	case netfail.DNS:
		return unreachable(fmt.Sprintf("DNS lookup of %q failed", nf.Name))
	case netfail.Refused:
		return unreachable("connection refused")
	case netfail.Unreachable:
		return unreachable("no route to host")
	}
	return unreachable("the connection failed or was closed")
}
