package catalog

import "fmt"

// Auth is a connection's credentials on top of mTLS (SPEC v2 "Credentials
// on top of mTLS"). Every secret is a reference (env:, file:, vault:,
// cyberark:, registry:...), resolved as keystore passwords are and read
// again when it changes.
type Auth struct {
	// Type is basic, bearer, header or oauth2.
	Type string `yaml:"type" json:"type"`

	// basic
	Username string `yaml:"username,omitempty" json:"username,omitempty"`
	Password string `yaml:"password,omitempty" json:"password,omitempty"`
	// bearer
	Token string `yaml:"token,omitempty" json:"token,omitempty"`
	// header: the header Name, and its Value (a reference)
	Name  string `yaml:"name,omitempty" json:"name,omitempty"`
	Value string `yaml:"value,omitempty" json:"value,omitempty"`

	// oauth2 (client credentials grant)
	TokenURL string `yaml:"token_url,omitempty" json:"token_url,omitempty"`
	ClientID string `yaml:"client_id,omitempty" json:"client_id,omitempty"`
	// ClientAuth is client_secret_basic (default), client_secret_post,
	// private_key_jwt (signed with the profile's key) or tls_client_auth
	// (RFC 8705: the profile's certificate is the credential).
	ClientAuth   string            `yaml:"client_auth,omitempty" json:"client_auth,omitempty"`
	ClientSecret string            `yaml:"client_secret,omitempty" json:"client_secret,omitempty"`
	Scopes       []string          `yaml:"scopes,omitempty" json:"scopes,omitempty"`
	Params       map[string]string `yaml:"params,omitempty" json:"params,omitempty"`
}

// Auth types and OAuth2 client authentication methods.
const (
	AuthBasic  = "basic"
	AuthBearer = "bearer"
	AuthHeader = "header"
	AuthOAuth2 = "oauth2"

	ClientSecretBasic = "client_secret_basic"
	ClientSecretPost  = "client_secret_post"
	PrivateKeyJWT     = "private_key_jwt"
	TLSClientAuth     = "tls_client_auth"
)

// validate checks the shape of a; name is the connection's.
func (a *Auth) validate(name string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("connection %s: auth: "+format, append([]any{name}, args...)...)
	}
	switch a.Type {
	case AuthBasic:
		if a.Username == "" || a.Password == "" {
			return bad("type basic needs username and password (a secret reference)")
		}
	case AuthBearer:
		if a.Token == "" {
			return bad("type bearer needs token (a secret reference)")
		}
	case AuthHeader:
		if a.Name == "" || a.Value == "" {
			return bad("type header needs name and value (a secret reference)")
		}
	case AuthOAuth2:
		if a.TokenURL == "" || a.ClientID == "" {
			return bad("type oauth2 needs token_url and client_id")
		}
		switch a.ClientAuth {
		case "", ClientSecretBasic, ClientSecretPost:
			if a.ClientSecret == "" {
				return bad("client_auth %s needs client_secret (a secret reference)", a.clientAuth())
			}
		case PrivateKeyJWT, TLSClientAuth:
		default:
			return bad("client_auth %q is not supported; use client_secret_basic, client_secret_post, private_key_jwt or tls_client_auth", a.ClientAuth)
		}
	default:
		return bad("type %q is not supported; use basic, bearer, header or oauth2", a.Type)
	}
	return nil
}

// clientAuth is ClientAuth with its default.
func (a *Auth) clientAuth() string {
	if a.ClientAuth == "" {
		return ClientSecretBasic
	}
	return a.ClientAuth
}

// Proxy is an egress proxy (SPEC v2 "Egress through a corporate proxy"):
// HTTP CONNECT through an http:// or https:// proxy, with basic proxy
// authentication when Username is set.
type Proxy struct {
	URL      string `yaml:"url" json:"url"`
	Username string `yaml:"username,omitempty" json:"username,omitempty"`
	// Password is a secret reference (env:, file:, vault:...).
	Password string `yaml:"password,omitempty" json:"password,omitempty"`
}

// ProxyNone, as a connection's proxy, means direct even when the worker
// has a default proxy.
const ProxyNone = "none"
