package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// start starts an embedded server with o (a fresh store), stopped when the
// test ends, and returns it with its client URL on 127.0.0.1.
func start(t *testing.T, o embedded.Options) (*embedded.Server, string) {
	t.Helper()
	o.StoreDir = t.TempDir()
	s, err := embedded.StartServer(o)
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	port := s.Addr().(*net.TCPAddr).Port
	return s, fmt.Sprintf("nats://127.0.0.1:%d", port)
}

// connect connects to url with opts, once, without retrying.
func connect(url string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(url, append(opts, nats.Timeout(5*time.Second), nats.MaxReconnects(0))...)
}

// wantAuthRefused fails unless err is the server's authorization violation.
func wantAuthRefused(t *testing.T, who string, nc *nats.Conn, err error) {
	t.Helper()
	if err == nil {
		nc.Close()
		t.Fatalf("%s connected; want it refused", who)
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("%s: got %v, want an authorization violation", who, err)
	}
}

// usesJetStream checks that nc may use JetStream: it creates a stream.
func usesJetStream(t *testing.T, nc *nats.Conn, stream string) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{stream + ".>"}}); err != nil {
		t.Fatalf("create stream %s: %v", stream, err)
	}
}

// A non-loopback listen address without users or an accounts file is
// refused, with a message that says what to do; loopback stays open.
func TestNonLoopbackNeedsAuthentication(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.10:0", "nats.example:0"} {
		t.Run("fail/"+listen, func(t *testing.T) {
			s, err := embedded.StartServer(embedded.Options{Listen: listen, StoreDir: t.TempDir()})
			if err == nil {
				s.Shutdown()
				t.Fatalf("the server started on %s without authentication", listen)
			}
			for _, want := range []string{"without authentication", "nats.embedded.users", "nats.embedded.accounts_file", "--listen"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
		})
	}
	for _, listen := range []string{"127.0.0.1:0", "localhost:0", "127.0.0.2:0"} {
		t.Run("ok/"+listen, func(t *testing.T) {
			s, url := start(t, embedded.Options{Listen: listen})
			if s.Auth() {
				t.Error("Auth() = true without users or accounts file")
			}
			if listen == "127.0.0.2:0" {
				url = strings.Replace(url, "127.0.0.1", "127.0.0.2", 1)
			}
			nc, err := connect(url)
			if err != nil {
				t.Fatalf("anonymous client on loopback: %v", err)
			}
			defer nc.Close()
			usesJetStream(t, nc, "OPEN")
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.1.2.3": true, "::1": true, "[::1]": true, "localhost": true, "LOCALHOST": true, "localhost.": true,
		"": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "nats": false, "localhost.example": false, "foo.localhost": false,
	} {
		if got := embedded.IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

// With users on 0.0.0.0: an anonymous client and a wrong password are
// refused, a user connects with full permissions, and the process's own
// connection (in process, as the internal user) works.
func TestUsers(t *testing.T) {
	s, url := start(t, embedded.Options{Listen: "0.0.0.0:0", Users: []embedded.User{
		{Name: "flow", Password: "flow-secret-1"},
		{Name: "ops", Password: "ops-secret-2"},
	}})
	if !s.Auth() || !s.Internal() {
		t.Fatalf("Auth() = %v, Internal() = %v; want both with users", s.Auth(), s.Internal())
	}

	t.Run("fail/anonymous", func(t *testing.T) {
		nc, err := connect(url)
		wantAuthRefused(t, "an anonymous client", nc, err)
	})
	t.Run("fail/wrong-password", func(t *testing.T) {
		nc, err := connect(url, nats.UserInfo("flow", "ops-secret-2"))
		wantAuthRefused(t, "flow with ops's password", nc, err)
	})
	t.Run("fail/internal-user-without-its-password", func(t *testing.T) {
		nc, err := connect(url, nats.UserInfo(embedded.InternalUser, ""))
		wantAuthRefused(t, "the internal user without its password", nc, err)
	})
	t.Run("ok/user", func(t *testing.T) {
		nc, err := connect(url, nats.UserInfo("flow", "flow-secret-1"))
		if err != nil {
			t.Fatalf("flow: %v", err)
		}
		defer nc.Close()
		usesJetStream(t, nc, "FLOW")
	})
	t.Run("ok/in-process", func(t *testing.T) {
		nc, err := nats.Connect(s.ClientURL(), append(s.ConnectOptions(), nats.MaxReconnects(0))...)
		if err != nil {
			t.Fatalf("in-process connection as the internal user: %v", err)
		}
		defer nc.Close()
		usesJetStream(t, nc, "INTERNAL")
	})
}

func TestUsersRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  embedded.Options
		wants string
	}{
		{"fail/empty-password", embedded.Options{Users: []embedded.User{{Name: "a"}}}, `user "a" has an empty password`},
		{"fail/no-name", embedded.Options{Users: []embedded.User{{Password: "p"}}}, "has no user name"},
		{"fail/twice", embedded.Options{Users: []embedded.User{{Name: "a", Password: "p"}, {Name: "a", Password: "q"}}}, "listed twice"},
		{"fail/reserved", embedded.Options{Users: []embedded.User{{Name: embedded.InternalUser, Password: "p"}}}, "reserved"},
		{"fail/users-and-accounts-file", embedded.Options{Users: []embedded.User{{Name: "a", Password: "p"}}, AccountsFile: "x.conf"}, "not both"},
		{"fail/accounts-file-missing", embedded.Options{AccountsFile: filepath.Join(t.TempDir(), "missing.conf")}, "nats.embedded.accounts_file"},
		{"fail/accounts-file-without-users", embedded.Options{AccountsFile: writeFile(t, "accounts {\n  A { jetstream: enabled }\n}\n")}, "defines no users"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Listen, tc.opts.StoreDir = "0.0.0.0:0", t.TempDir()
			s, err := embedded.StartServer(tc.opts)
			if err == nil {
				s.Shutdown()
				t.Fatal("the server started")
			}
			if !strings.Contains(err.Error(), tc.wants) {
				t.Errorf("error %q lacks %q", err, tc.wants)
			}
		})
	}
}

// accountsConf is a small nats-server authorization: account RELAY with
// JetStream, a worker with full permissions and a flow that may only
// publish calls and read its own results.
const accountsConf = `
listen: 127.0.0.1:4999            # ignored: the embedded server keeps its own
jetstream { store_dir: "/nonexistent" }  # ignored too
accounts {
  RELAY {
    jetstream: enabled
    users: [
      { user: worker, password: worker-pw }
      {
        user: flow
        password: flow-pw
        permissions: {
          publish: { allow: ["mtlsrelay.calls.>"] }
          subscribe: { allow: ["mtlsrelay.results.flow.>"] }
        }
      }
    ]
  }
}
`

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "accounts.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// With an accounts file on 0.0.0.0: its users and permissions apply, its
// listen and store_dir do not, and an anonymous client is refused.
func TestAccountsFile(t *testing.T) {
	s, url := start(t, embedded.Options{Listen: "0.0.0.0:0", AccountsFile: writeFile(t, accountsConf)})
	if !s.Auth() || s.Internal() || s.NoAuthUser() != "" {
		t.Fatalf("Auth() = %v, Internal() = %v, NoAuthUser() = %q", s.Auth(), s.Internal(), s.NoAuthUser())
	}
	t.Run("fail/anonymous", func(t *testing.T) {
		nc, err := connect(url)
		wantAuthRefused(t, "an anonymous client", nc, err)
	})
	t.Run("fail/in-process-wrong-password", func(t *testing.T) {
		// The server closes the in-process pipe (after its write deadline,
		// 10s) rather than answering -ERR: any error will do.
		if testing.Short() {
			t.Skip("-short: takes the server's 10s write deadline")
		}
		nc, err := nats.Connect(s.ClientURL(), append(s.ConnectOptions(), nats.UserInfo("worker", "flow-pw"), nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Fatal("an in-process client with a wrong password connected")
		}
	})
	t.Run("ok/worker-in-process", func(t *testing.T) {
		nc, err := nats.Connect(s.ClientURL(), append(s.ConnectOptions(), nats.UserInfo("worker", "worker-pw"), nats.MaxReconnects(0))...)
		if err != nil {
			t.Fatalf("worker in process: %v", err)
		}
		defer nc.Close()
		usesJetStream(t, nc, "RELAY")
	})
	t.Run("ok/flow-with-its-permissions", func(t *testing.T) {
		errs := make(chan error, 4)
		nc, err := connect(url, nats.UserInfo("flow", "flow-pw"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		if err != nil {
			t.Fatalf("flow: %v", err)
		}
		defer nc.Close()
		if _, err := nc.SubscribeSync("mtlsrelay.results.flow.x"); err != nil {
			t.Fatal(err)
		}
		if _, err := nc.SubscribeSync("mtlsrelay.results.other.x"); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			if !strings.Contains(err.Error(), "Permissions Violation") || !strings.Contains(err.Error(), "mtlsrelay.results.other.x") {
				t.Errorf("got %v, want a permissions violation for mtlsrelay.results.other.x", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("flow subscribed to another flow's results: the file's permissions do not apply")
		}
	})
	if port := s.Addr().(*net.TCPAddr).Port; port == 4999 {
		t.Error("the accounts file's listen was used")
	}
}

// The partitions' subject mapping (nats.partitions) is in place on the
// embedded server: a call published for a connection reaches its
// partition's subject, the same one every time.
func TestMappings(t *testing.T) {
	subj := jobs.Subjects{}
	src, dst := subj.PartitionMapping(4)
	_, url := start(t, embedded.Options{Listen: "127.0.0.1:0", Mappings: map[string]string{src: dst}})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("mtlsrelay.part.*.calls.*")
	if err != nil {
		t.Fatal(err)
	}
	var first string
	for range 3 {
		if err := nc.Publish("mtlsrelay.calls.orders", []byte("{}")); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no message on a partition subject: %v", err)
		}
		if first == "" {
			first = m.Subject
		}
		if m.Subject != first || !strings.HasSuffix(m.Subject, ".calls.orders") {
			t.Fatalf("mapped to %s, then %s; want one partition subject ending in .calls.orders", first, m.Subject)
		}
	}
}
