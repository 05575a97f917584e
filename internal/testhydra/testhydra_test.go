package testhydra_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/internal/testhydra"
)

// TestHydra issues client-credentials tokens through the mTLS proxy, to
// client_secret_basic, client_secret_post and private_key_jwt clients,
// introspects them, counts the requests and refuses a replaced secret.
func TestHydra(t *testing.T) {
	ca, err := pki.NewCA("testhydra CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue(pki.LeafOptions{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	h := testhydra.Start(t, testhydra.Options{Certificate: server.TLSCertificate(), ClientCAs: ca.Pool()})
	if !strings.HasPrefix(h.TokenURL, "https://127.0.0.1:") || !strings.HasPrefix(h.AdminURL, "http://127.0.0.1:") {
		t.Fatalf("TokenURL %s AdminURL %s", h.TokenURL, h.AdminURL)
	}
	mtls := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLSCertificate()},
	}}}
	token := func(t *testing.T, form url.Values, user, pass string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, h.TokenURL, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" {
			req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
		}
		resp, err := mtls.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}

	h.CreateClient(t, testhydra.Client{ID: "basic-client", Secret: "basic-secret-0123456789", AuthMethod: "client_secret_basic",
		Scope: "orders.read orders.write", Audience: []string{"https://partner.example"}, TokenLifespan: 90 * time.Second})
	status, body := token(t, url.Values{"grant_type": {"client_credentials"}, "scope": {"orders.read"}, "audience": {"https://partner.example"}}, "basic-client", "basic-secret-0123456789")
	if status != 200 || body["expires_in"].(float64) > 90 || body["scope"] != "orders.read" {
		t.Fatalf("basic: %d %v", status, body)
	}
	in, err := h.Introspect(context.Background(), body["access_token"].(string))
	if err != nil || !in.Active || in.ClientID != "basic-client" || in.Scope != "orders.read" {
		t.Fatalf("introspect: %v %+v", err, in)
	}
	firstToken := body["access_token"].(string)
	if n := h.TokenRequests("basic-client"); n != 1 {
		t.Fatalf("TokenRequests = %d", n)
	}

	h.CreateClient(t, testhydra.Client{ID: "post-client", Secret: "post-secret-0123456789", AuthMethod: "client_secret_post"})
	if status, body := token(t, url.Values{"grant_type": {"client_credentials"}, "client_id": {"post-client"}, "client_secret": {"post-secret-0123456789"}}, "", ""); status != 200 {
		t.Fatalf("post: %d %v", status, body)
	}
	h.SetSecret(t, "post-client", "post-secret-rotated-42")
	if status, body := token(t, url.Values{"grant_type": {"client_credentials"}, "client_id": {"post-client"}, "client_secret": {"post-secret-0123456789"}}, "", ""); status != 401 || body["error"] != "invalid_client" {
		t.Fatalf("old secret: %d %v", status, body)
	}

	// private_key_jwt: the assertion's aud is the proxy's token URL.
	jwk, alg := testhydra.JWK(client.Cert)
	h.CreateClient(t, testhydra.Client{ID: "jwt-client", AuthMethod: "private_key_jwt", JWKS: []map[string]any{jwk}, SigningAlg: alg})
	now := time.Now()
	assertion := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{
		Issuer: "jwt-client", Subject: "jwt-client", Audience: jwt.ClaimStrings{h.TokenURL}, ID: "jti-" + now.String(),
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)),
	})
	assertion.Header["kid"] = jwk["kid"]
	signed, err := assertion.SignedString(client.Key)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := token(t, url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {signed}}, "", ""); status != 200 {
		t.Fatalf("private_key_jwt: %d %v\n%s", status, body, h.Logs())
	}
	if n := h.TokenRequests("jwt-client"); n != 1 {
		t.Fatalf("TokenRequests(jwt-client) = %d", n)
	}

	creds := strings.Join(h.Credentials(), "\n")
	for _, want := range []string{"basic-secret-0123456789", "post-secret-0123456789", signed, firstToken} {
		if !strings.Contains(creds, want) {
			t.Errorf("Credentials lacks %.12s...", want)
		}
	}

	// The proxy requires a client certificate.
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	if resp, err := plain.PostForm(h.TokenURL, url.Values{"grant_type": {"client_credentials"}}); err == nil {
		resp.Body.Close()
		t.Fatalf("token request without a client certificate: HTTP %d", resp.StatusCode)
	}
}
