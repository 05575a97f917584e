package testvault_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
)

func TestStartRestartStop(t *testing.T) {
	v := testvault.Start(t)
	if !strings.HasPrefix(v.Addr, "http://127.0.0.1:") {
		t.Errorf("Addr = %s", v.Addr)
	}
	if n := v.PutKV("secret", "x", map[string]any{"k": "v"}); n != 1 {
		t.Errorf("first version = %d", n)
	}
	addr := v.Addr
	v.Restart()
	if v.Addr != addr {
		t.Errorf("restarted on %s, want %s", v.Addr, addr)
	}
	// Dev mode forgets everything but the root token.
	_, err := v.Client.KVv2("secret").Get(context.Background(), "x")
	if !errors.Is(err, api.ErrSecretNotFound) {
		t.Errorf("after Restart the secret is still there (err %v)", err)
	}
	if n := v.PutKV("secret", "x", map[string]any{"k": "v"}); n != 1 {
		t.Errorf("first version after restart = %d", n)
	}
	v.Stop()
	if _, err := v.Client.Sys().Health(); err == nil {
		t.Errorf("Vault still answers after Stop")
	}
	v.Stop() // idempotent
}

func TestStartWithTLS(t *testing.T) {
	v := testvault.Start(t, testvault.WithTLS())
	if !strings.HasPrefix(v.Addr, "https://") || v.CACert == "" {
		t.Fatalf("Addr %s CACert %q", v.Addr, v.CACert)
	}
	if _, err := v.Client.Sys().Health(); err != nil {
		t.Fatalf("health over TLS with the CA Vault wrote: %v", err)
	}
}
