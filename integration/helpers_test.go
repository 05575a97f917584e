package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/testutil"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// fixturePassword is the password of the test keystores in
// secrets/testdata (made by make-fixtures.sh); tests check it never leaks.
const fixturePassword = "fixture-pass-123"

// fixtures is the absolute path of secrets/testdata.
func fixtures(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "secrets", "testdata")
}

func fixture(t testing.TB, name string) string { return filepath.Join(fixtures(t), name) }

// startNATS starts a real NATS server with JetStream on a free loopback port.
func startNATS(t testing.TB) *server.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// partnerOptions tweak a partner server for a test.
type partnerOptions func(*partner.Options)

func tlsMax12(o *partner.Options) { o.MaxTLSVersion = tls.VersionTLS12 }

// clientCAs makes the partner trust client certificates from the CA in
// the named PEM fixture instead of ca.pem.
func clientCAs(name string) partnerOptions {
	return func(o *partner.Options) { o.ClientCAs = poolFromPEM(name) }
}

var fixtureDir = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "secrets", "testdata")
}()

func poolFromPEM(name string) *x509.CertPool {
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		panic(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		panic("no certificates in " + name)
	}
	return p
}

// startPartner starts a real mTLS partner server (RequireAndVerifyClientCert)
// with the fixture server certificate for localhost and 127.0.0.1, trusting
// client certificates from the fixture CA.
func startPartner(t testing.TB, opts ...partnerOptions) *partner.Server {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(fixture(t, "server.pem"), fixture(t, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	o := partner.Options{Certificate: cert, ClientCAs: poolFromPEM("ca.pem")}
	for _, f := range opts {
		f(&o)
	}
	p, err := partner.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// syncBuffer collects log output from several goroutines.
type syncBuffer = testutil.SyncBuffer

// startWorker runs an in-process worker with the YAML config cfgYAML on the
// NATS server at url, logging JSON at debug level into the returned buffer.
// It stops when the test ends.
func startWorker(t testing.TB, url, cfgYAML string) (*worker.Worker, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	nc, _ := connect(t, url)
	w := runWorker(t, nc, cfgYAML, worker.WithLogger(zerolog.New(logs).Level(zerolog.DebugLevel)))
	return w, logs
}

// startWorkerWithResolver is startWorker with the worker's resolver and
// logger given.
func startWorkerWithResolver(t testing.TB, url, cfgYAML string, res *secrets.Resolver, log zerolog.Logger) *worker.Worker {
	t.Helper()
	nc, _ := connect(t, url)
	return runWorker(t, nc, cfgYAML, worker.WithResolver(res), worker.WithLogger(log))
}

// runWorker runs a worker with the YAML config cfgYAML on nc until the test
// ends, and returns once it is ready.
func runWorker(t testing.TB, nc *nats.Conn, cfgYAML string, opts ...worker.Option) *worker.Worker {
	t.Helper()
	return testutil.RunWorker(t, nc, cfgYAML, opts...)
}

// checkFor polls fn until it returns nil or total passes.
func checkFor(t testing.TB, total, sleep time.Duration, fn func() error) {
	t.Helper()
	testutil.CheckFor(t, total, sleep, fn)
}

// callRaw publishes raw call bytes to mtlsrelay.calls.<conn> with plain
// nats.go and returns the result published to replyTo.
func callRaw(t testing.TB, nc *nats.Conn, js jetstream.JetStream, conn, id, replyTo string, data []byte) *jobs.Result {
	t.Helper()
	sub, err := nc.SubscribeSync(replyTo)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	msg := nats.NewMsg("mtlsrelay.calls." + conn)
	msg.Data = data
	msg.Header.Set("Nats-Msg-Id", id)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatalf("no result for call %s on %s: %v", id, replyTo, err)
	}
	if got := m.Header.Get("Mtlsrelay-Call-Id"); got != id {
		t.Errorf("result header Mtlsrelay-Call-Id = %q, want %q", got, id)
	}
	if got := m.Header.Get("Nats-Msg-Id"); got != id {
		t.Errorf("result header Nats-Msg-Id = %q, want %q", got, id)
	}
	var r jobs.Result
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("result is not JSON: %v: %s", err, m.Data)
	}
	return &r
}

var idSeq struct {
	mu sync.Mutex
	n  int
}

// uniqueID returns a call id unique within the test binary.
func uniqueID(prefix string) string {
	idSeq.mu.Lock()
	defer idSeq.mu.Unlock()
	idSeq.n++
	return fmt.Sprintf("%s-%d-%d", strings.NewReplacer("/", "-", " ", "-").Replace(prefix), os.Getpid(), idSeq.n)
}

// call sends a call given as a JSON-able map, setting id and reply_to.
func call(t testing.TB, nc *nats.Conn, js jetstream.JetStream, conn string, c map[string]any) *jobs.Result {
	t.Helper()
	id := uniqueID(t.Name())
	c["id"] = id
	reply := "mtlsrelay.results.test." + id
	c["reply_to"] = reply
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return callRaw(t, nc, js, conn, id, reply, data)
}

// goBinary builds a Go command once per test run: pkg (a path relative to
// the repository, or a module package go.mod requires) into a temporary
// folder, named name.
type goBinary struct {
	pkg, name string
	once      sync.Once
	path      string
	err       error
}

func (b *goBinary) get(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "mtlsrelay-"+b.name+"-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, b.name)
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", b.path, b.pkg)
		cmd.Dir = filepath.Join(filepath.Dir(file), "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var relayBinary = &goBinary{pkg: "./cmd/mtlsrelay", name: "mtlsrelay"}

// mtlsrelayBinary builds cmd/mtlsrelay once per test run.
func mtlsrelayBinary(t testing.TB) string { return relayBinary.get(t) }

// configYAML fills the placeholders FIX (fixture dir) and PARTNER (a partner
// URL) of a config template.
func configYAML(t testing.TB, tmpl string, repl ...string) string {
	t.Helper()
	r := append([]string{"FIX", fixtures(t)}, repl...)
	return strings.NewReplacer(r...).Replace(tmpl)
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// waitCallsSettled waits until consumer "workers" holds no call: every call
// stored was delivered and acknowledged (or terminated).
func waitCallsSettled(ctx context.Context, t testing.TB, js jetstream.JetStream, within time.Duration) {
	t.Helper()
	cons, err := js.Consumer(ctx, jobs.StreamCalls, jobs.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, within, 50*time.Millisecond, func() error {
		// A request that went to a NATS node just killed is never
		// answered: each look has its own deadline.
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 {
			return fmt.Errorf("consumer %s still holds calls: %d awaiting ack, %d pending", jobs.ConsumerWorkers, info.NumAckPending, info.NumPending)
		}
		return nil
	})
}
