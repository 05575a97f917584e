package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// startServerWith starts a real NATS server with JetStream and the given
// options on a free loopback port.
func startServerWith(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// runWorkerConfig runs an in-process worker that connects to url the way
// `mtlsrelay serve` does: with the nats section of cfgYAML.
func runWorkerConfig(t *testing.T, url, cfgYAML string) {
	t.Helper()
	cfg, err := worker.ParseConfig([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	auth, err := cfg.NATS.AuthOptions(context.Background(), secrets.DefaultSources(t.TempDir()), "")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, auth...)
	if err != nil {
		t.Fatalf("worker connect: %v", err)
	}
	t.Cleanup(nc.Close)
	runWorker(t, nc, cfgYAML, worker.WithLogger(zerolog.Nop()))
}

const authWorkerConfig = `
nats: NATSAUTH
worker: {concurrency: 4, admin_addr: "off"}
registry: {disabled: true}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p}
`

// Each way a worker can authenticate to NATS, against a real server that
// demands it.
func TestNATSAuthentication(t *testing.T) {
	p := startPartner(t)
	dir := t.TempDir()
	userKP, _ := nkeys.CreateUser()
	userPub, _ := userKP.PublicKey()
	seed, _ := userKP.Seed()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	serverCert, err := tls.LoadX509KeyPair(fixture(t, "server.pem"), fixture(t, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	clientPEM := filepath.Join(dir, "nats-client.pem")
	clientKey := filepath.Join(dir, "nats-client.key")
	splitPEM(t, fixture(t, "client.pem"), clientPEM, clientKey)
	t.Setenv("MTLSRELAY_TEST_NATS_PASSWORD", "s3cret-nats")
	t.Setenv("MTLSRELAY_TEST_NATS_TOKEN", "t0ken-nats")

	for _, tc := range []struct {
		name string
		opts *server.Options
		auth string
		// client connects the test's flow side.
		client []nats.Option
	}{
		{"ok/user-password", &server.Options{Username: "relay", Password: "s3cret-nats"},
			`{user: relay, password: "env:MTLSRELAY_TEST_NATS_PASSWORD"}`, []nats.Option{nats.UserInfo("relay", "s3cret-nats")}},
		{"ok/token", &server.Options{Authorization: "t0ken-nats"},
			`{token: "env:MTLSRELAY_TEST_NATS_TOKEN"}`, []nats.Option{nats.Token("t0ken-nats")}},
		{"ok/nkey", &server.Options{Nkeys: []*server.NkeyUser{{Nkey: userPub}}},
			`{nkey_seed_file: "` + seedFile + `"}`, []nats.Option{nkeyOpt(t, seedFile)}},
		{"ok/mtls", &server.Options{TLS: true, TLSVerify: true, TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: poolFromPEM("ca.pem"), MinVersion: tls.VersionTLS12}},
			`{tls: {ca_file: "` + fixture(t, "ca.pem") + `", cert_file: "` + clientPEM + `", key_file: "` + clientKey + `"}}`,
			[]nats.Option{nats.RootCAs(fixture(t, "ca.pem")), nats.ClientCert(clientPEM, clientKey)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServerWith(t, tc.opts)
			url := s.ClientURL()
			if tc.opts.TLS {
				url = strings.Replace(url, "nats://", "tls://", 1)
			}
			// Without credentials the server refuses.
			if nc, err := nats.Connect(url, nats.Timeout(2*time.Second)); err == nil {
				nc.Close()
				t.Fatal("server accepts clients without credentials; the test proves nothing")
			}
			runWorkerConfig(t, url, configYAML(t, authWorkerConfig, "NATSAUTH", tc.auth, "PARTNER", p.URL()))
			nc, err := nats.Connect(url, tc.client...)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			r := call(t, nc, js, "partner", map[string]any{"path": "echo"})
			if !r.OK {
				t.Fatalf("call through an authenticated worker: %+v", r.Error)
			}
		})
	}
}

func nkeyOpt(t *testing.T, seedFile string) nats.Option {
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

// splitPEM writes the certificates and the key of a PEM bundle to two files.
func splitPEM(t *testing.T, bundle, certOut, keyOut string) {
	t.Helper()
	b, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "-----BEGIN PRIVATE KEY-----")
	if i < 0 {
		t.Fatal("bundle has no PKCS#8 key")
	}
	if err := os.WriteFile(certOut, []byte(text[:i]), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyOut, []byte(text[i:]), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Direct calls come in on a NATS connection of their own. A server that
// refuses the worker a second connection gets them on the worker's one,
// and they are still answered.
func TestDirectCallsConnection(t *testing.T) {
	p := startPartner(t)
	cfgYAML := configYAML(t, strings.ReplaceAll(authWorkerConfig, "nats: NATSAUTH\n", ""), "PARTNER", p.URL())
	direct := func(t *testing.T, nc *nats.Conn) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		data, _ := json.Marshal(map[string]any{"id": uniqueID("direct-conn"), "path": "status/200"})
		m, err := nc.RequestWithContext(ctx, "mtlsrelay.rpc.partner", data)
		if err != nil {
			t.Fatal(err)
		}
		var res jobs.Result
		if err := json.Unmarshal(m.Data, &res); err != nil || !res.OK {
			t.Fatalf("direct call: %v %+v", err, res)
		}
	}
	t.Run("ok/a-connection-of-their-own", func(t *testing.T) {
		srv := startServerWith(t, &server.Options{})
		nc, _ := connect(t, srv.ClientURL())
		wnc, _ := connect(t, srv.ClientURL())
		runWorker(t, wnc, cfgYAML, worker.WithLogger(zerolog.Nop()))
		direct(t, nc)
		if n := srv.NumClients(); n != 3 {
			t.Errorf("the server has %d clients; want the flow's, the worker's and the worker's for direct calls", n)
		}
	})
	t.Run("ok/the-worker-s-connection-when-a-second-is-refused", func(t *testing.T) {
		srv := startServerWith(t, &server.Options{MaxConn: 2})
		nc, _ := connect(t, srv.ClientURL())
		// As mtlsrelay serve connects: retrying a failed connect in the
		// background, an option the second connection must not copy.
		wnc, err := nats.Connect(srv.ClientURL(), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(wnc.Close)
		runWorker(t, wnc, cfgYAML, worker.WithLogger(zerolog.Nop()))
		direct(t, nc)
	})
}
