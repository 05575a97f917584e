package worker_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// Credentials go over plain nats:// only to a loopback server, unless
// nats.allow_plaintext says the network is trusted; TLS (a tls:// URL or
// nats.tls settings) always passes. Every URL of a list is checked.
func TestCheckPlaintext(t *testing.T) {
	user := worker.NATSConfig{User: "worker", Password: "env:NATS_PASSWORD"}
	for _, tc := range []struct {
		name string
		cfg  worker.NATSConfig
		urls string
		want string // in the error; "" for none
	}{
		{name: "ok/no-credentials-anywhere", urls: "nats://nats.example:4222,nats://10.0.0.2:4222"},
		{name: "ok/loopback-ipv4", cfg: user, urls: "nats://127.0.0.1:4222"},
		{name: "ok/loopback-127-8", cfg: user, urls: "nats://127.3.2.1:4222"},
		{name: "ok/loopback-ipv6", cfg: user, urls: "nats://[::1]:4222"},
		{name: "ok/localhost", cfg: user, urls: "nats://localhost:4222"},
		{name: "ok/localhost-without-scheme", cfg: user, urls: "localhost:4222"},
		{name: "ok/tls-url", cfg: user, urls: "tls://nats.example:4222"},
		{name: "ok/tls-urls", cfg: user, urls: "tls://n1.example:4222, tls://n2.example:4222"},
		{name: "ok/wss-url", cfg: user, urls: "wss://nats.example:443"},
		{name: "ok/tls-settings", cfg: worker.NATSConfig{User: "w", Password: "env:P", TLS: worker.NATSTLSConfig{CAFile: "ca.pem"}}, urls: "nats://nats.example:4222"},
		{name: "ok/tls-client-cert", cfg: worker.NATSConfig{CredsFile: "w.creds", TLS: worker.NATSTLSConfig{CertFile: "c.pem", KeyFile: "c.key"}}, urls: "nats://nats.example:4222"},
		{name: "ok/allow-plaintext", cfg: worker.NATSConfig{User: "w", Password: "env:P", AllowPlaintext: true}, urls: "nats://nats-1:4222,nats://nats-2:4222"},
		{name: "ok/url-user-on-loopback", urls: "nats://u:p@127.0.0.1:4222"},
		{name: "fail/user-password", cfg: user, urls: "nats://nats.example:4222", want: "refusing to send nats.user and nats.password to NATS at nats.example:4222 over plain nats://"},
		{name: "fail/creds-file", cfg: worker.NATSConfig{CredsFile: "w.creds"}, urls: "nats://10.0.0.2:4222", want: "nats.creds_file"},
		{name: "fail/token", cfg: worker.NATSConfig{Token: "env:T"}, urls: "nats://10.0.0.2:4222", want: "nats.token"},
		{name: "fail/nkey", cfg: worker.NATSConfig{NKeySeedFile: "w.nk"}, urls: "nats://10.0.0.2:4222", want: "nats.nkey_seed_file"},
		{name: "fail/no-scheme", cfg: user, urls: "nats.example:4222", want: "over plain nats://"},
		{name: "fail/all-interfaces", cfg: user, urls: "nats://0.0.0.0:4222", want: "0.0.0.0:4222"},
		{name: "fail/websocket", cfg: user, urls: "ws://nats.example:80", want: "over plain ws://"},
		{name: "fail/second-url-of-list", cfg: user, urls: "tls://n1.example:4222,nats://n2.example:4222", want: "n2.example:4222"},
		{name: "fail/loopback-then-remote", cfg: user, urls: "nats://127.0.0.1:4222, nats://10.1.1.1:4222", want: "10.1.1.1:4222"},
		{name: "fail/localhost-lookalike", cfg: user, urls: "nats://localhost.example:4222", want: "localhost.example"},
		{name: "fail/user-in-url", urls: "nats://u:secret-pw@nats.example:4222", want: "the user in the URL"},
		{name: "fail/tells-what-to-do", cfg: user, urls: "nats://nats.example:4222", want: "Use tls://nats.example:4222 (with nats.tls.ca_file for a private CA), or set nats.allow_plaintext: true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.CheckPlaintext(tc.urls)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted %s", tc.urls)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret-pw") {
				t.Errorf("the error shows the URL's password: %v", err)
			}
		})
	}
}

// What CheckPlaintext lets through works against a real server: a worker
// config with user and password connects to an embedded server with users
// on loopback over plain nats://.
func TestAuthOptionsLoopbackUser(t *testing.T) {
	s, err := embedded.StartServer(embedded.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir(),
		Users: []embedded.User{{Name: "worker", Password: "worker-pw-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	url := "nats://127.0.0.1:" + strconv.Itoa(s.Addr().(*net.TCPAddr).Port)
	t.Setenv("MTLSRELAY_TEST_NATS_PASSWORD", "worker-pw-1\n")

	cfg := worker.NATSConfig{User: "worker", Password: "env:MTLSRELAY_TEST_NATS_PASSWORD"}
	if err := cfg.CheckPlaintext(url); err != nil {
		t.Fatalf("loopback refused: %v", err)
	}
	opts, err := cfg.AuthOptions(context.Background(), secrets.DefaultSources(""), "")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, append(opts, nats.Timeout(5*time.Second), nats.MaxReconnects(0))...)
	if err != nil {
		t.Fatalf("connect with the config's user: %v", err)
	}
	nc.Close()
	if nc, err := nats.Connect(url, nats.Timeout(5*time.Second), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("an anonymous client connected to a server with users")
	}
}

func TestEmbeddedResolvedUsers(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ops.pw"), []byte("ops-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MTLSRELAY_TEST_FLOW_PW", "flow-pw")
	e := worker.EmbeddedConfig{Users: []worker.EmbeddedUser{
		{User: "flow", Password: "env:MTLSRELAY_TEST_FLOW_PW"},
		{User: "ops", Password: "file:ops.pw"},
		{User: "inline", Password: "value:inline-pw"},
	}}
	got, err := e.ResolvedUsers(context.Background(), secrets.DefaultSources(dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []worker.EmbeddedUser{{User: "flow", Password: "flow-pw"}, {User: "ops", Password: "ops-pw"}, {User: "inline", Password: "inline-pw"}}
	if len(got) != len(want) {
		t.Fatalf("got %d users, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("user %d: got %s/%q, want %s/%q", i, got[i].User, got[i].Password, want[i].User, want[i].Password)
		}
	}

	for name, u := range map[string]worker.EmbeddedUser{
		"fail/unset-variable": {User: "a", Password: "env:MTLSRELAY_TEST_UNSET_VARIABLE"},
		"fail/empty-password": {User: "a"},
		"fail/empty-value":    {User: "a", Password: "value:"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := worker.EmbeddedConfig{Users: []worker.EmbeddedUser{u}}.ResolvedUsers(context.Background(), secrets.DefaultSources(dir), dir)
			if err == nil || !strings.Contains(err.Error(), "embedded.users[0]") {
				t.Errorf("got %v, want an error naming nats.embedded.users[0]", err)
			}
		})
	}
}

func TestNATSConfigValidate(t *testing.T) {
	ok := worker.NATSConfig{User: "w", Password: "env:P", Embedded: worker.EmbeddedConfig{Users: []worker.EmbeddedUser{{User: "a", Password: "env:A"}}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		cfg  worker.NATSConfig
		want string
	}{
		{"fail/users-and-accounts-file", worker.NATSConfig{Embedded: worker.EmbeddedConfig{AccountsFile: "a.conf", Users: []worker.EmbeddedUser{{User: "a", Password: "env:A"}}}}, "users or accounts_file, not both"},
		{"fail/user-without-name", worker.NATSConfig{Embedded: worker.EmbeddedConfig{Users: []worker.EmbeddedUser{{Password: "env:A"}}}}, "users[0]: user is empty"},
		{"fail/user-twice", worker.NATSConfig{Embedded: worker.EmbeddedConfig{Users: []worker.EmbeddedUser{{User: "a", Password: "env:A"}, {User: "a", Password: "env:B"}}}}, "listed twice"},
		{"fail/user-without-password", worker.NATSConfig{Embedded: worker.EmbeddedConfig{Users: []worker.EmbeddedUser{{User: "a"}}}}, "password is empty"},
		{"fail/password-not-a-reference", worker.NATSConfig{Embedded: worker.EmbeddedConfig{Users: []worker.EmbeddedUser{{User: "a", Password: "hunter2"}}}}, "users[0].password"},
		{"fail/nats-password-without-user", worker.NATSConfig{Password: "env:P"}, "without nats.user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
