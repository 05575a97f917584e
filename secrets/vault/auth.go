package vault

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// The auth methods implement api.AuthMethod, as vault/api's own do.
var (
	_ api.AuthMethod = (*approle.AppRoleAuth)(nil)
	_ api.AuthMethod = (*kubernetes.KubernetesAuth)(nil)
	_ api.AuthMethod = certAuth{}
)

// authenticate obtains a token with the configured method. Every login
// reads its credentials again (the token or secret_id reference, the
// service account token file), so credentials rotated on disk are picked
// up. The returned secret's Auth holds the token and its lease; it is never
// logged.
func (c *Client) authenticate(ctx context.Context) (*api.Secret, error) {
	a := c.cfg.Auth
	switch a.Method {
	case AuthToken:
		return c.tokenLogin(ctx)
	case AuthAppRole:
		return c.appRoleLogin(ctx)
	case AuthKubernetes:
		k, err := kubernetes.NewKubernetesAuth(a.Role,
			kubernetes.WithMountPath(a.Mount), kubernetes.WithServiceAccountTokenPath(a.JWTPath))
		if err != nil {
			return nil, jobs.Wrap(err, jobs.CodeSecretUnavailable,
				"cannot read the Kubernetes service account token %s for the Vault login; check vault.auth.jwt_path and the pod's service account", a.JWTPath).WithRetryable(false)
		}
		return c.methodLogin(ctx, k)
	case AuthCert:
		if c.cert.Changed(ctx) {
			// The pair was rotated: log in on a connection that presents it.
			c.certTransport.CloseIdleConnections()
		}
		return c.methodLogin(ctx, certAuth{mount: a.Mount, role: a.Role})
	}
	return nil, c.cfg.Validate()
}

// methodLogin logs in with m on the client that carries no token.
func (c *Client) methodLogin(ctx context.Context, m api.AuthMethod) (*api.Secret, error) {
	s, err := m.Login(ctx, c.anon)
	if err != nil {
		return nil, c.loginError(err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, jobs.Errorf(jobs.CodeSecretUnavailable,
			"Vault at %s answered the %s login at auth/%s/login without a token; check the auth method's configuration", c.addr, c.cfg.Auth.Method, c.cfg.Auth.Mount)
	}
	return s, nil
}

// appRoleLogin logs in with role_id and secret_id read through the
// worker's secret references.
func (c *Client) appRoleLogin(ctx context.Context) (*api.Secret, error) {
	a := c.cfg.Auth
	roleID, err := c.readRef(ctx, "role_id", a.RoleID)
	if err != nil {
		return nil, err
	}
	if a.SecretID == "" {
		// A role with bind_secret_id=false: vault/api's AppRoleAuth insists
		// on a secret_id, so this login is written out.
		return c.methodLogin(ctx, loginFunc(func(ctx context.Context, cl *api.Client) (*api.Secret, error) {
			return cl.Logical().WriteWithContext(ctx, "auth/"+a.Mount+"/login", map[string]any{"role_id": roleID})
		}))
	}
	secretID, err := c.readRef(ctx, "secret_id", a.SecretID)
	if err != nil {
		return nil, err
	}
	m, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromString: secretID}, approle.WithMountPath(a.Mount))
	if err != nil {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid, "vault.auth.role_id or secret_id is empty; check the references")
	}
	return c.methodLogin(ctx, m)
}

// tokenLogin uses the token of vault.auth.token (or VAULT_TOKEN) and looks
// up its TTL, so it is renewed while it can be.
func (c *Client) tokenLogin(ctx context.Context) (*api.Secret, error) {
	tok := c.envToken
	if c.cfg.Auth.Token != "" {
		var err error
		if tok, err = c.readRef(ctx, "token", c.cfg.Auth.Token); err != nil {
			return nil, err
		}
	}
	if tok == "" {
		return nil, jobs.Errorf(jobs.CodeSecretUnavailable,
			"no Vault token: set vault.auth.token (e.g. env:VAULT_TOKEN) or the VAULT_TOKEN variable, or choose another vault.auth.method").WithRetryable(false)
	}
	cl, err := c.anon.Clone()
	if err != nil {
		return nil, jobs.Wrap(err, jobs.CodeInternal, "cloning the Vault client failed")
	}
	cl.SetToken(tok)
	s, err := cl.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == 403 {
			return nil, jobs.Wrap(re, jobs.CodeSecretUnavailable,
				"Vault at %s does not accept the token of vault.auth.token (lookup-self: permission denied): it is invalid or expired, or lacks the default policy; give the worker a valid token", c.addr).WithRetryable(false)
		}
		return nil, classify(err, c.addr, op{doing: "looking up the token to log in with", path: "auth/token/lookup-self", capability: "read"})
	}
	auth := &api.SecretAuth{ClientToken: tok}
	if s != nil {
		auth.Renewable, _ = s.Data["renewable"].(bool)
		if n, ok := s.Data["ttl"].(json.Number); ok {
			ttl, _ := n.Int64()
			auth.LeaseDuration = int(ttl)
		}
		if p, err := s.TokenPolicies(); err == nil {
			auth.Policies = p
		}
	}
	return &api.Secret{Auth: auth}, nil
}

// readRef reads a credential through the worker's sources, without one
// trailing newline (echo writes one into files).
func (c *Client) readRef(ctx context.Context, key, text string) (string, error) {
	ref, err := secrets.ParseRef(text)
	if err != nil {
		return "", jobs.Wrap(err, jobs.CodeKeystoreInvalid, "vault.auth.%s: %s", key, jobs.AsError(err).Message)
	}
	sec, err := c.sources.Fetch(ctx, ref)
	if err != nil {
		je := jobs.AsError(err)
		out := jobs.Wrap(je, je.Code, "vault.auth.%s %s: %s", key, ref, je.Message)
		out.Retryable = je.Retryable
		return "", out
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(sec.Data), "\n"), "\r")
	if v == "" {
		return "", jobs.Errorf(jobs.CodeSecretUnavailable, "vault.auth.%s %s is empty; put the credential there", key, ref).WithRetryable(false)
	}
	return v, nil
}

// loginError classifies a failed login. Vault's answers to a login with bad
// credentials are 400 ("invalid role or secret ID") or 403; they are not
// retried soon, as only a person can fix them.
func (c *Client) loginError(err error) *jobs.Error {
	a := c.cfg.Auth
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500 && re.StatusCode != 429 && re.StatusCode != 412 {
		return jobs.Wrap(re, jobs.CodeSecretUnavailable,
			"Vault at %s refused the %s login at auth/%s/login (HTTP %d%s); check vault.auth (role, credentials, mount)",
			c.addr, a.Method, a.Mount, re.StatusCode, vaultSaid(re)).WithRetryable(false)
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return jobs.Wrap(err, jobs.CodeSecretUnavailable,
			"cannot read %s for the Vault %s login; check the file", pe.Path, a.Method).WithRetryable(false)
	}
	return classify(err, c.addr, op{doing: "logging in with " + a.Method, path: "auth/" + a.Mount + "/login", capability: "update"})
}

// certAuth logs in with the TLS client certificate the HTTP client
// presents (vault.auth.client_cert and client_key).
type certAuth struct{ mount, role string }

// Login implements api.AuthMethod.
func (a certAuth) Login(ctx context.Context, cl *api.Client) (*api.Secret, error) {
	data := map[string]any{}
	if a.role != "" {
		data["name"] = a.role
	}
	return cl.Logical().WriteWithContext(ctx, "auth/"+a.mount+"/login", data)
}

// loginFunc adapts a function to api.AuthMethod.
type loginFunc func(context.Context, *api.Client) (*api.Secret, error)

// Login implements api.AuthMethod.
func (f loginFunc) Login(ctx context.Context, cl *api.Client) (*api.Secret, error) { return f(ctx, cl) }
