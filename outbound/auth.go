package outbound

import (
	"context"
	"encoding/base64"
	"net/http"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Credentials on top of mTLS (a connection's auth). Every secret is read
// through ExecutorOptions.Secrets each time a header is built or a token
// is requested, so a secret rotated where it is kept is used without a
// restart (Vault KV answers are reused by the provider for its
// poll_interval). What is read is put in the request's header and nowhere
// else: never in an error, a result or a log.

// credential is what one attempt sends for its connection's auth: one
// header. For oauth2, token and slot say which token it is, so that a 401
// renews that token only.
type credential struct {
	header string
	value  string

	slot  *tokenSlot
	token *heldToken
}

// apply sets the credential on req, replacing any value of the header.
func (c *credential) apply(req *http.Request) {
	if c == nil {
		return
	}
	req.Header.Set(c.header, c.value)
}

// renewable reports whether a 401 answer to a request made with c is
// worth one renewal and one more try: an OAuth2 token may have been revoked
// or expired early. Static credentials would be read again unchanged.
func (c *credential) renewable() bool { return c != nil && c.slot != nil }

// credentials returns what an attempt on connection name sends for its
// auth. ctx bounds reading secrets and waiting for a token; it must not
// carry the attempt's httptrace hooks (a token request is not the call's
// request).
func (x *Executor) credentials(ctx context.Context, name string, conn *catalog.Connection, mat *secrets.Material, pt *pooledTransport) (*credential, *jobs.Error) {
	a := conn.Auth
	switch a.Type {
	case catalog.AuthBasic:
		password, err := x.readAuthSecret(ctx, name, "password", a.Password)
		if err != nil {
			return nil, err
		}
		defer clear(password)
		if e := checkHeaderValue(name, "password", a.Password, password); e != nil {
			return nil, e
		}
		// RFC 7617: user-id ":" password, UTF-8, base64.
		raw := make([]byte, 0, len(a.Username)+1+len(password))
		raw = append(append(append(raw, a.Username...), ':'), password...)
		defer clear(raw)
		return &credential{header: "Authorization", value: "Basic " + base64.StdEncoding.EncodeToString(raw)}, nil
	case catalog.AuthBearer:
		token, err := x.readAuthSecret(ctx, name, "token", a.Token)
		if err != nil {
			return nil, err
		}
		if e := checkHeaderValue(name, "token", a.Token, token); e != nil {
			return nil, e
		}
		return &credential{header: "Authorization", value: "Bearer " + string(token)}, nil
	case catalog.AuthHeader:
		value, err := x.readAuthSecret(ctx, name, "value", a.Value)
		if err != nil {
			return nil, err
		}
		if e := checkHeaderValue(name, "value", a.Value, value); e != nil {
			return nil, e
		}
		return &credential{header: http.CanonicalHeaderKey(a.Name), value: string(value)}, nil
	case catalog.AuthOAuth2:
		return x.oauth.credential(ctx, x, name, conn, mat, pt)
	}
	return nil, jobs.Errorf(jobs.CodeInternal, "connection %s has auth of type %q, which this worker does not know; see the worker log", name, a.Type)
}

// readAuthSecret reads the secret ref of field (password, token,
// client_secret...) of connection name's auth. An error keeps the source's
// code and retryability and names the field and the reference (redacted
// when it holds the secret itself), never the secret.
func (x *Executor) readAuthSecret(ctx context.Context, name, field, ref string) ([]byte, *jobs.Error) {
	if x.opts.Secrets == nil {
		return nil, jobs.Errorf(jobs.CodeInternal,
			"connection %s has auth, but this executor has no secret reader (ExecutorOptions.Secrets); see the worker log", name)
	}
	b, err := x.opts.Secrets(ctx, ref)
	if err != nil {
		je := jobs.AsError(err)
		return nil, jobs.Wrap(err, je.Code, "connection %s: auth %s (%s): %s", name, field, secrets.RedactRef(ref), je.Message).WithRetryable(je.Retryable)
	}
	if len(b) == 0 {
		return nil, jobs.Errorf(jobs.CodeSecretUnavailable,
			"connection %s: auth %s (%s) is empty; put the credential there", name, field, secrets.RedactRef(ref)).WithRetryable(false)
	}
	return b, nil
}

// checkHeaderValue refuses a secret that cannot be sent in an HTTP header:
// net/http would refuse the whole request, with a vaguer error.
func checkHeaderValue(name, field, ref string, v []byte) *jobs.Error {
	for _, c := range v {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return jobs.Errorf(jobs.CodeKeystoreInvalid,
				"connection %s: auth %s (%s) holds a line break or another control character, which an HTTP header cannot carry; store the credential alone, on one line",
				name, field, secrets.RedactRef(ref))
		}
	}
	return nil
}
