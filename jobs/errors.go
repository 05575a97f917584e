package jobs

import (
	"errors"
	"fmt"
)

// Code is one of the stable error codes of the wire contract. Flows branch on
// these strings, so a code is never renamed or reused for another meaning.
type Code string

// The stable error codes of SPEC.md, in one place.
const (
	// CodeInvalidCall: the call message is not valid JSON or breaks a rule of the contract.
	CodeInvalidCall Code = "invalid_call"
	// CodeUnknownConnection: no connection of that name in the config or registry.
	CodeUnknownConnection Code = "unknown_connection"
	// CodeUnknownProfile: the connection names a profile that does not exist.
	CodeUnknownProfile Code = "unknown_profile"
	// CodeHostNotAllowed: the target host is not in the connection's allow_hosts.
	CodeHostNotAllowed Code = "host_not_allowed"
	// CodeSecretUnavailable: a secret source could not be reached; retry later.
	CodeSecretUnavailable Code = "secret_unavailable"
	// CodeKeystoreInvalid: the keystore cannot be decoded or holds no usable key.
	CodeKeystoreInvalid Code = "keystore_invalid"
	// CodeKeystorePasswordWrong: the keystore did not open with the given password.
	CodeKeystorePasswordWrong Code = "keystore_password_wrong"
	// CodeClientCertExpired: the client certificate's NotAfter has passed.
	CodeClientCertExpired Code = "client_cert_expired"
	// CodeClientCertNotYetValid: the client certificate's NotBefore is in the future.
	CodeClientCertNotYetValid Code = "client_cert_not_yet_valid"
	// CodeServerCertUntrusted: the server's chain does not lead to a trusted CA.
	CodeServerCertUntrusted Code = "server_cert_untrusted"
	// CodeServerNameMismatch: the server's certificate is not valid for the host name.
	CodeServerNameMismatch Code = "server_name_mismatch"
	// CodeClientCertRejected: the server refused the client certificate.
	CodeClientCertRejected Code = "client_cert_rejected"
	// CodeTLSHandshakeFailed: the TLS handshake failed for another reason.
	CodeTLSHandshakeFailed Code = "tls_handshake_failed"
	// CodeConnectFailed: DNS or TCP connect failed; retryable.
	CodeConnectFailed Code = "connect_failed"
	// CodeTimeout: the attempt's deadline passed; retryable.
	CodeTimeout Code = "timeout"
	// CodeResponseTooLarge: the response body exceeded max_response_bytes.
	CodeResponseTooLarge Code = "response_too_large"
	// CodeHTTPStatus: a retryable HTTP status (429, 502, 503, 504) outlived its attempts.
	CodeHTTPStatus Code = "http_status"
	// CodeCanceled: the call was canceled before it completed.
	CodeCanceled Code = "canceled"
	// CodeInternal: a defect in mtlsrelay itself.
	CodeInternal Code = "internal"

	// Extensions of SPEC.md's list: new codes only, never renamed ones.

	// CodeCircuitOpen: the partner failed so often that the worker stopped
	// calling it for a while; retryable.
	CodeCircuitOpen Code = "circuit_open"
	// CodeOutcomeUnknown: a worker stopped while a non-idempotent request
	// may have reached the partner; it is not repeated, so the flow must
	// check with the partner. Not retryable.
	CodeOutcomeUnknown Code = "outcome_unknown"
	// CodeMaxDeliveries: JetStream delivered the call worker.max_deliver
	// times and it never ended (its connection saturated all along, its
	// workers crashing on it, NATS failing each time its result was
	// published); it was ended and dead-lettered rather than kept forever.
	// Not retryable.
	CodeMaxDeliveries Code = "max_deliveries"

	// Contract additions (v2).

	// CodeAuthFailed: the partner's token endpoint refused the client
	// (connection auth); not retried.
	CodeAuthFailed Code = "auth_failed"
	// CodeProxyRefused: the egress proxy answered the CONNECT with 403 or
	// 407; not retried.
	CodeProxyRefused Code = "proxy_refused"
	// CodeServerCertRevoked: the partner's certificate is revoked (OCSP or
	// CRL), or its status could not be had under revocation: require; not
	// retried.
	CodeServerCertRevoked Code = "server_cert_revoked"
	// CodeSOAPSignatureInvalid: the connection verifies WS-Security
	// signatures of responses, and the response's is missing, does not
	// verify, has expired or was made by a certificate the profile's
	// truststore does not trust; not retried.
	CodeSOAPSignatureInvalid Code = "soap_signature_invalid"
	// CodeZoneUnavailable: a direct call's connection is in a zone no
	// running worker serves (worker.zones); retryable. A durable call
	// waits for one instead.
	CodeZoneUnavailable Code = "zone_unavailable"
)

// CodeInfo is one row of the table of error codes.
type CodeInfo struct {
	Code Code
	// Retryable says whether a failure with this code is retried by
	// default. A source may still mark one failure otherwise
	// (Error.WithRetryable): a secret that does not exist is not retried.
	Retryable bool
	// Meaning says, in a sentence, what the code means.
	Meaning string
}

// codeTable is the one list of the stable error codes, in the order of
// SPEC.md then the extensions. Codes, Retryable and CodeTable derive from
// it; tests check the JSON Schema's enum and the README's table against
// it.
var codeTable = []CodeInfo{
	{CodeInvalidCall, false, "the call is not valid JSON or breaks a rule of the contract"},
	{CodeUnknownConnection, false, "no connection of that name in the config file or the registry"},
	{CodeUnknownProfile, false, "the connection names a profile that does not exist"},
	{CodeHostNotAllowed, false, "the target host is not in the connection's allow_hosts"},
	{CodeSecretUnavailable, true, "a secret source could not give the secret"},
	{CodeKeystoreInvalid, false, "the keystore cannot be decoded or holds no usable key"},
	{CodeKeystorePasswordWrong, false, "the keystore did not open with the profile's password"},
	{CodeClientCertExpired, false, "the client certificate has expired"},
	{CodeClientCertNotYetValid, false, "the client certificate is not valid yet"},
	{CodeServerCertUntrusted, false, "the server's chain does not lead to a trusted CA"},
	{CodeServerNameMismatch, false, "the server's certificate is not valid for the host name"},
	{CodeClientCertRejected, false, "the server refused the client certificate"},
	{CodeTLSHandshakeFailed, false, "the TLS handshake failed for another reason"},
	{CodeConnectFailed, true, "DNS, TCP connect or reset failed"},
	{CodeTimeout, true, "the attempt's deadline passed"},
	{CodeResponseTooLarge, false, "the response body exceeded max_response_bytes, or the result what NATS takes in one message"},
	{CodeHTTPStatus, true, "a retryable HTTP status (429, 502, 503, 504) outlived the call's attempts"},
	{CodeCanceled, false, "the call was canceled before it completed"},
	{CodeInternal, false, "a defect in mtlsrelay itself"},
	{CodeCircuitOpen, true, "the partner failed so often that the worker stopped calling it for a while"},
	{CodeOutcomeUnknown, false, "a worker stopped while a non-idempotent request may have reached the partner"},
	{CodeMaxDeliveries, false, "the call was delivered worker.max_deliver times without ending, and was ended"},
	{CodeAuthFailed, false, "the partner's token endpoint refused the client credentials of the connection's auth"},
	{CodeProxyRefused, false, "the egress proxy refused the CONNECT (403 or 407)"},
	{CodeServerCertRevoked, false, "the partner's certificate is revoked, or its status could not be had under revocation: require"},
	{CodeSOAPSignatureInvalid, false, "the response's WS-Security signature is missing, invalid or expired, or its signer is not trusted"},
	{CodeZoneUnavailable, true, "no running worker serves the zone of the direct call's connection"},
}

// retryableCodes are the codes whose failures are retried by default.
var retryableCodes = func() map[Code]bool {
	m := map[Code]bool{}
	for _, c := range codeTable {
		if c.Retryable {
			m[c.Code] = true
		}
	}
	return m
}()

// CodeTable returns the table of error codes.
func CodeTable() []CodeInfo { return append([]CodeInfo(nil), codeTable...) }

// Codes lists every stable error code, for documentation and tests.
func Codes() []Code {
	out := make([]Code, len(codeTable))
	for i, c := range codeTable {
		out[i] = c.Code
	}
	return out
}

// Retryable reports whether failures with this code are retried by default.
func (c Code) Retryable() bool { return retryableCodes[c] }

// Error is a failure with a stable code, a message a person can act on, and
// whether another attempt may succeed. It is the `error` object of a Result.
//
// The message never holds a password, a private key or keystore bytes: it is
// built by the code that classifies the failure, never copied from input.
type Error struct {
	Code      Code   `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`

	cause error
}

// Errorf returns an Error with code, a formatted message and the code's
// default retryability.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: code.Retryable()}
}

// Wrap is Errorf that keeps cause for errors.Is and errors.As. The cause's
// text is not part of the message; callers add what a person needs to read.
func Wrap(cause error, code Code, format string, args ...any) *Error {
	e := Errorf(code, format, args...)
	e.cause = cause
	return e
}

// Error returns "code: message".
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// WithRetryable returns a copy of e with Retryable set to r.
func (e *Error) WithRetryable(r bool) *Error {
	c := *e
	c.Retryable = r
	return &c
}

// AsError returns err as an *Error: the one it wraps if there is one, else an
// internal error that says so without echoing err's text, which may hold input.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Wrap(err, CodeInternal, "unexpected failure inside mtlsrelay (%T); see the worker log for this call id", err)
}

// CodeOf returns the code of err, or "" when err is nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	return AsError(err).Code
}
