package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/internal/testutil"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// These tests run `mtlsrelay serve` (the serve function) with an embedded
// NATS server on 0.0.0.0 and real clients, and the commands that connect
// to NATS with credentials they must not send in clear text.

// testConfig parses a worker config (YAML, with DATA replaced by a fresh
// folder) as serve gets it: admin endpoints off, files relative to a
// temporary folder.
func testConfig(t *testing.T, yaml string) *worker.Config {
	t.Helper()
	dir := t.TempDir()
	cfg, err := worker.ParseConfig([]byte(strings.ReplaceAll(yaml, "DATA", filepath.Join(dir, "data"))))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.Dir = dir
	cfg.Worker.AdminAddr = "off"
	return cfg
}

// running is a serve started in the background.
type running struct {
	logs *testutil.SyncBuffer
	done chan error
}

// startServe runs serve with cfg until the test ends.
func startServe(t *testing.T, cfg *worker.Config) *running {
	t.Helper()
	r := &running{logs: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.done <- serve(ctx, cfg, zerolog.New(r.logs)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			// Stopped while still setting up its streams: not a failure.
			if err != nil && !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "context canceled") {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("serve did not stop within 60s")
		}
	})
	return r
}

var embeddedURL = regexp.MustCompile(`"url":"nats://[^"]*:(\d+)".*embedded NATS server with JetStream started`)

// clientURL waits for the embedded server and returns its URL on 127.0.0.1.
func (r *running) clientURL(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := embeddedURL.FindStringSubmatch(r.logs.String()); m != nil {
			return "nats://127.0.0.1:" + m[1]
		}
		select {
		case err := <-r.done:
			t.Fatalf("serve stopped: %v\n%s", err, r.logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("the embedded server did not start:\n%s", r.logs)
	return ""
}

func dial(url string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(url, append(opts, nats.Timeout(5*time.Second), nats.MaxReconnects(0))...)
}

func wantRefused(t *testing.T, who string, nc *nats.Conn, err error) {
	t.Helper()
	if err == nil {
		nc.Close()
		t.Fatalf("%s connected to the embedded server; want it refused", who)
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("%s: got %v, want an authorization violation", who, err)
	}
}

// waitForStreams waits until the worker has created MTLSRELAY_CALLS, seen
// through js (the worker is connected and set up).
func waitForStreams(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	testutil.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.Stream(ctx, "MTLSRELAY_CALLS")
		return err
	})
}

// A non-loopback listen address without authentication stops serve at
// once, saying what to add.
func TestServeEmbeddedRefusesOpenNonLoopback(t *testing.T) {
	cfg := testConfig(t, `nats: {embedded: {listen: "0.0.0.0:0", data_dir: DATA}}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := serve(ctx, cfg, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "nats.embedded.users") || !strings.Contains(err.Error(), "nats.embedded.accounts_file") {
		t.Fatalf("serve on 0.0.0.0 without authentication: got %v, want a refusal naming nats.embedded.users and accounts_file", err)
	}
}

// With nats.embedded.users on 0.0.0.0: an anonymous client is refused, a
// user connects, and the worker (the internal user, in process) runs.
func TestServeEmbeddedUsers(t *testing.T) {
	t.Setenv("MTLSRELAY_TEST_FLOW_PASSWORD", "flow-pw-from-env")
	cfg := testConfig(t, `
nats:
  embedded:
    listen: "0.0.0.0:0"
    data_dir: DATA
    users:
      - {user: flow, password: env:MTLSRELAY_TEST_FLOW_PASSWORD}
`)
	r := startServe(t, cfg)
	url := r.clientURL(t)
	if !strings.Contains(r.logs.String(), `"auth":"nats.embedded.users"`) {
		t.Errorf("the start log does not say how clients authenticate:\n%s", r.logs)
	}

	nc, err := dial(url)
	wantRefused(t, "an anonymous client", nc, err)
	nc, err = dial(url, nats.UserInfo("flow", "wrong"))
	wantRefused(t, "flow with a wrong password", nc, err)

	flow, err := dial(url, nats.UserInfo("flow", "flow-pw-from-env"))
	if err != nil {
		t.Fatalf("flow: %v", err)
	}
	defer flow.Close()
	js, _ := jetstream.New(flow)
	waitForStreams(t, js)
	callUnknownConnection(t, flow, "mtlsrelay.results.flow.u1", r)
}

// callUnknownConnection publishes a call to a connection that does not
// exist and waits for the worker's result on reply: unknown_connection.
func callUnknownConnection(t *testing.T, nc *nats.Conn, reply string, r *running) {
	t.Helper()
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	id := reply[strings.LastIndex(reply, ".")+1:]
	if err := nc.Publish("mtlsrelay.calls.nope", []byte(`{"id":"`+id+`","reply_to":"`+reply+`"}`)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no result from the worker: %v\n%s", err, r.logs)
	}
	var res struct {
		ID    string `json:"id"`
		OK    bool   `json:"ok"`
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &res); err != nil || res.ID != id || res.OK || res.Error == nil || res.Error.Code != "unknown_connection" {
		t.Errorf("result %s, want %s failed with unknown_connection", m.Data, id)
	}
}

// accountsConf is a small authorization: account RELAY with JetStream, the
// workers' user, and a flow that may publish calls, look at streams and
// read its own results only.
const accountsConf = `
accounts {
  RELAY {
    jetstream: enabled
    users: [
      { user: worker, password: worker-pw }
      {
        user: flow
        password: flow-pw
        permissions: {
          publish: { allow: ["mtlsrelay.calls.>", "$JS.API.STREAM.INFO.*", "$JS.API.INFO"] }
          subscribe: { allow: ["mtlsrelay.results.flow.>", "_INBOX.>"] }
        }
      }
    ]
  }
}
`

// With nats.embedded.accounts_file on 0.0.0.0: the worker logs in as the
// file's worker (nats.user), starts and answers a call; a flow user of the
// file connects with the file's permissions; an anonymous client is refused.
func TestServeEmbeddedAccountsFile(t *testing.T) {
	cfg := testConfig(t, `
nats:
  user: worker
  password: value:worker-pw
  embedded:
    listen: "0.0.0.0:0"
    data_dir: DATA
    accounts_file: accounts.conf
`)
	// Relative to the config's folder.
	if err := os.WriteFile(filepath.Join(cfg.Dir, "accounts.conf"), []byte(accountsConf), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startServe(t, cfg)
	url := r.clientURL(t)

	nc, err := dial(url)
	wantRefused(t, "an anonymous client", nc, err)

	violations := make(chan error, 8)
	flow, err := dial(url, nats.UserInfo("flow", "flow-pw"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatalf("flow: %v", err)
	}
	defer flow.Close()
	js, _ := jetstream.New(flow)
	waitForStreams(t, js)

	// A call to a connection that does not exist: the worker answers it.
	callUnknownConnection(t, flow, "mtlsrelay.results.flow.c1", r)

	// The file's permissions hold: the flow cannot read the calls.
	if _, err := flow.SubscribeSync("mtlsrelay.calls.>"); err != nil {
		t.Fatal(err)
	}
	_ = flow.Flush()
	select {
	case err := <-violations:
		if !strings.Contains(err.Error(), "Permissions Violation") {
			t.Errorf("got %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the flow subscribed to mtlsrelay.calls.>: the accounts file's permissions do not apply")
	}
}

// With an accounts file the worker needs a user of it: without nats.user
// serve stops and says so; with a wrong password it stops too.
func TestServeEmbeddedAccountsFileWorkerCredentials(t *testing.T) {
	for _, tc := range []struct{ name, nats, want string }{
		{"fail/no-user", "", "set nats.user and nats.password"},
		{"fail/wrong-password", "user: worker\n  password: value:not-the-password\n  ", "refused the worker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "fail/wrong-password" && testing.Short() {
				t.Skip("-short: the server takes its 10s write deadline to drop an in-process login it refuses")
			}
			cfg := testConfig(t, "nats:\n  "+tc.nats+"embedded: {listen: \"0.0.0.0:0\", data_dir: DATA, accounts_file: accounts.conf}\n")
			if err := os.WriteFile(filepath.Join(cfg.Dir, "accounts.conf"), []byte(accountsConf), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err := serve(ctx, cfg, zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// Every command that connects refuses to send credentials over plain
// nats:// to a host that is not loopback, before dialing; loopback works.
func TestCommandsRefusePlaintextCredentials(t *testing.T) {
	// Never dialed: the refusal comes first (192.0.2.0/24 is TEST-NET-1).
	const remote = "nats://127.0.0.1:4222,nats://192.0.2.1:4222"
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "worker.yaml")
	if err := os.WriteFile(cfgPath, []byte("nats: {user: flow, password: value:flow-pw}\nworker: {admin_addr: \"off\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := worker.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	const want = "refusing to send nats.user and nats.password to NATS at 192.0.2.1:4222 over plain nats://"

	t.Run("fail/serve", func(t *testing.T) {
		c := *cfg
		c.NATS.URL = remote
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := serve(ctx, &c, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want %q", err, want)
		}
	})
	t.Run("fail/call-and-test", func(t *testing.T) {
		nc, err := connectNATS(remote, cfg, "test", zerolog.Nop())
		if err == nil {
			nc.Close()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want %q", err, want)
		}
	})
	t.Run("fail/password-in-url-without-config", func(t *testing.T) {
		nc, err := connectNATS("nats://u:pw@192.0.2.1:4222", nil, "test", zerolog.Nop())
		if err == nil {
			nc.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "the user in the URL") {
			t.Fatalf("got %v, want a refusal of the URL's user", err)
		}
	})
	for name, args := range map[string][]string{
		"status":          {"status", "--config", cfgPath, "--nats", remote},
		"profile-list":    {"profile", "list", "--config", cfgPath, "--nats", remote},
		"connection-list": {"connection", "list", "--config", cfgPath, "--nats", remote},
	} {
		t.Run("fail/"+name, func(t *testing.T) {
			if err := runCommand(t, args...); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%v: got %v, want %q", args, err, want)
			}
		})
	}
	t.Run("ok/allow_plaintext", func(t *testing.T) {
		c := *cfg
		c.NATS.AllowPlaintext = true
		if _, err := natsAuthOptions(remote, &c); err != nil {
			t.Fatalf("refused with allow_plaintext: %v", err)
		}
	})
	t.Run("ok/tls", func(t *testing.T) {
		if _, err := natsAuthOptions("tls://192.0.2.1:4222", cfg); err != nil {
			t.Fatalf("refused over tls://: %v", err)
		}
	})

	// Loopback: the same credentials reach a server with that user.
	t.Run("ok/loopback", func(t *testing.T) {
		s, err := embedded.StartServer(embedded.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir(),
			Users: []embedded.User{{Name: "flow", Password: "flow-pw"}}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { s.Shutdown(); s.WaitForShutdown() }()
		url := fmt.Sprintf("nats://127.0.0.1:%d", s.Addr().(*net.TCPAddr).Port)
		if err := runCommand(t, "status", "--config", cfgPath, "--nats", url, "--wait", "100ms", "--json"); err != nil {
			t.Fatalf("status over loopback with the config's user: %v", err)
		}
		if err := runCommand(t, "profile", "list", "--config", cfgPath, "--nats", url); err != nil {
			t.Fatalf("profile list over loopback with the config's user: %v", err)
		}
	})
}

// runCommand runs the mtlsrelay command line with args.
func runCommand(t *testing.T, args ...string) error {
	t.Helper()
	var cmd interface {
		SetArgs([]string)
		ExecuteContext(context.Context) error
	}
	switch args[0] {
	case "status":
		c := newStatusCmd()
		c.SilenceUsage, c.SilenceErrors = true, true
		cmd = c
	case "profile":
		c := newProfileCmd()
		c.SilenceUsage, c.SilenceErrors = true, true
		cmd = c
	case "connection":
		c := newConnectionCmd()
		c.SilenceUsage, c.SilenceErrors = true, true
		cmd = c
	default:
		t.Fatalf("runCommand: %s is not handled", args[0])
	}
	cmd.SetArgs(args[1:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cmd.ExecuteContext(ctx)
}
