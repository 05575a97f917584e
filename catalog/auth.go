package catalog

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/mtlsrelay/mtlsrelay/secrets"
)

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

// validate checks the shape of a; name is the connection's. Secret
// references are checked for syntax only (never echoed: one may be a
// value: holding the secret); whether they can be read is the worker's
// business, each time it builds a header or asks for a token.
func (a *Auth) validate(name string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("connection %s: auth: "+format, append([]any{name}, args...)...)
	}
	ref := func(field, r string) error {
		if _, err := secrets.ParseRef(r); err != nil {
			return bad("%s must be a secret reference (env:NAME, file:PATH, vault:MOUNT/PATH#FIELD...): %v", field, err)
		}
		return nil
	}
	switch a.Type {
	case AuthBasic:
		if a.Username == "" || a.Password == "" {
			return bad("type basic needs username and password (a secret reference)")
		}
		// RFC 7617: the user-id cannot hold a colon.
		if strings.ContainsAny(a.Username, ":\r\n") {
			return bad("the basic username cannot hold a colon or a line break")
		}
		return ref("password", a.Password)
	case AuthBearer:
		if a.Token == "" {
			return bad("type bearer needs token (a secret reference)")
		}
		return ref("token", a.Token)
	case AuthHeader:
		if a.Name == "" || a.Value == "" {
			return bad("type header needs name and value (a secret reference)")
		}
		if !validHeaderName(a.Name) {
			return bad("header name %q is not a valid HTTP field name", a.Name)
		}
		if why, ok := reservedAuthHeaders[strings.ToLower(a.Name)]; ok {
			return bad("header %s cannot carry credentials: %s", a.Name, why)
		}
		return ref("value", a.Value)
	case AuthOAuth2:
		if a.TokenURL == "" || a.ClientID == "" {
			return bad("type oauth2 needs token_url and client_id")
		}
		u, err := url.Parse(a.TokenURL)
		if err != nil || u.Host == "" || u.Scheme != "https" {
			return bad("token_url must be an absolute https URL: the token is requested over mTLS with the connection's profile")
		}
		if u.User != nil {
			return bad("token_url cannot hold user information; the client authenticates by client_auth")
		}
		switch a.ClientAuth {
		case "", ClientSecretBasic, ClientSecretPost:
			if a.ClientSecret == "" {
				return bad("client_auth %s needs client_secret (a secret reference)", a.clientAuth())
			}
			if err := ref("client_secret", a.ClientSecret); err != nil {
				return err
			}
		case PrivateKeyJWT, TLSClientAuth:
			if a.ClientSecret != "" {
				return bad("client_auth %s authenticates with the profile's key and certificate; remove client_secret", a.ClientAuth)
			}
		default:
			return bad("client_auth %q is not supported; use client_secret_basic, client_secret_post, private_key_jwt or tls_client_auth", a.ClientAuth)
		}
		for _, s := range a.Scopes {
			if s == "" || strings.ContainsAny(s, " \"\\") || strings.IndexFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
				return bad("scope %q is not a valid OAuth scope (printable ASCII, no spaces, quotes or backslashes)", s)
			}
		}
		for k := range a.Params {
			if reservedTokenParams[k] {
				return bad("params cannot set %q: mtlsrelay sets it from token_url, client_id, client_auth and scopes", k)
			}
		}
	default:
		return bad("type %q is not supported; use basic, bearer, header or oauth2", a.Type)
	}
	return nil
}

// reservedAuthHeaders are the headers an auth of type header may not
// name, with why.
var reservedAuthHeaders = map[string]string{
	"host":                "it names the partner's host",
	"content-length":      "the relay frames the body it sends",
	"content-type":        "it describes the body",
	"transfer-encoding":   "the relay frames the body it sends",
	"te":                  "hop-by-hop headers belong to the relay's own connection",
	"trailer":             "hop-by-hop headers belong to the relay's own connection",
	"connection":          "hop-by-hop headers belong to the relay's own connection",
	"keep-alive":          "hop-by-hop headers belong to the relay's own connection",
	"upgrade":             "hop-by-hop headers belong to the relay's own connection",
	"proxy-connection":    "hop-by-hop headers belong to the relay's own connection",
	"proxy-authorization": "it goes to the egress proxy, not to the partner",
}

// reservedTokenParams are the token request parameters that params may
// not set.
var reservedTokenParams = map[string]bool{
	"grant_type": true, "scope": true, "client_id": true, "client_secret": true,
	"client_assertion": true, "client_assertion_type": true,
}

// HeaderNames returns the canonical names of the request headers a
// connection's auth writes: Authorization, or the header of type header.
// A call may not set them itself.
func (a *Auth) HeaderNames() []string {
	if a == nil {
		return nil
	}
	if a.Type == AuthHeader {
		if n := http.CanonicalHeaderKey(a.Name); n != "Authorization" {
			return []string{"Authorization", n}
		}
	}
	return []string{"Authorization"}
}

// validHeaderName reports whether k is an HTTP field name (a token).
func validHeaderName(k string) bool {
	if k == "" || len(k) > 256 {
		return false
	}
	for i := 0; i < len(k); i++ {
		ch := k[i]
		if ch <= ' ' || ch >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", ch) >= 0 {
			return false
		}
	}
	return true
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
