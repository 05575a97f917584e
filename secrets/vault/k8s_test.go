package vault_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
)

// fakeTokenReview is the one Kubernetes API a Vault kubernetes auth mount
// calls: POST /apis/authentication.k8s.io/v1/tokenreviews (TokenReview,
// authentication.k8s.io/v1, as documented in the Kubernetes API
// reference). No Kubernetes API server can run here, so this stands in for
// it; Vault itself is real. It accepts exactly one token, for the service
// account prod/relay.
func fakeTokenReview(t *testing.T, validJWT string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var reviews atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		reviews.Add(1)
		var review struct {
			Spec struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		status := map[string]any{"authenticated": false, "error": "invalid bearer token"}
		if review.Spec.Token == validJWT {
			status = map[string]any{"authenticated": true, "user": map[string]any{
				"username": "system:serviceaccount:prod:relay",
				"uid":      "6c3d8a8e-0000-4000-8000-000000000001",
				"groups":   []string{"system:serviceaccounts", "system:serviceaccounts:prod", "system:authenticated"},
			}}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status,
		})
	}))
	t.Cleanup(srv.Close)
	return srv, &reviews
}

// serviceAccountJWT returns a JWT shaped like a legacy Kubernetes service
// account token for prod/relay. Vault reads its claims; the TokenReview
// vouches for it (Vault is given no key to check the signature).
func serviceAccountJWT() string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	header := enc(map[string]string{"alg": "RS256", "kid": "test"})
	claims := enc(map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:prod:relay",
		"kubernetes.io/serviceaccount/namespace": "prod",
		"kubernetes.io/serviceaccount/service-account.name": "relay",
		"kubernetes.io/serviceaccount/service-account.uid":  "6c3d8a8e-0000-4000-8000-000000000001",
		"kubernetes.io/serviceaccount/secret.name":          "relay-token",
	})
	return header + "." + claims + "." + base64.RawURLEncoding.EncodeToString([]byte("not-checked-signature"))
}

func TestKubernetesAuth(t *testing.T) {
	jwt := serviceAccountJWT()
	k8s, reviews := fakeTokenReview(t, jwt)
	v := testvault.Start(t)
	v.Policy("partners-read", readPolicy)
	v.PutKV("secret", "partners/a", map[string]any{"password": fixturePassword})
	v.EnableAuth("kubernetes", "kubernetes")
	caPEM := string(pemOf(k8s.Certificate().Raw))
	v.Write("auth/kubernetes/config", map[string]any{
		"kubernetes_host":        k8s.URL,
		"kubernetes_ca_cert":     caPEM,
		"disable_local_ca_jwt":   true,
		"disable_iss_validation": true,
	})
	v.Write("auth/kubernetes/role/relay", map[string]any{
		"bound_service_account_names":      "relay",
		"bound_service_account_namespaces": "prod",
		"token_policies":                   "partners-read",
		"token_ttl":                        "1h",
	})
	dir := t.TempDir()
	jwtPath := filepath.Join(dir, "token")
	if err := os.WriteFile(jwtPath, []byte(jwt), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("ok/service-account-login-reads-kv", func(t *testing.T) {
		e := newClient(t, v, vault.Config{PollInterval: -1, Auth: vault.AuthConfig{
			Method: vault.AuthKubernetes, Role: "relay", JWTPath: jwtPath,
		}}, jwt)
		sec, err := e.fetch(t, "vault:secret/partners/a#password")
		if err != nil {
			t.Fatal(err)
		}
		if string(sec.Data) != fixturePassword {
			t.Errorf("read %d bytes, not the password", len(sec.Data))
		}
		if reviews.Load() == 0 {
			t.Error("Vault never asked the TokenReview API: the login was not a Kubernetes login")
		}
	})

	t.Run("fail/token-the-cluster-rejects", func(t *testing.T) {
		bad := filepath.Join(dir, "bad-token")
		// Well-formed, same claims, but not a token the cluster issued.
		forged := jwt[:strings.LastIndex(jwt, ".")+1] + base64.RawURLEncoding.EncodeToString([]byte("forged"))
		if err := os.WriteFile(bad, []byte(forged), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := vault.New(context.Background(), vault.Config{Address: v.Addr, Auth: vault.AuthConfig{
			Method: vault.AuthKubernetes, Role: "relay", JWTPath: bad,
		}}, nil, zerologTo(&syncBuffer{}))
		if err == nil {
			t.Fatal("a token the cluster rejects logged in")
		}
		if reviews.Load() < 2 {
			t.Errorf("the forged token was refused before the TokenReview (%d reviews): %v", reviews.Load(), err)
		}
		if strings.Contains(err.Error(), forged) {
			t.Errorf("error holds the token: %v", err)
		}
	})
}

func pemOf(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
