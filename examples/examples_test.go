package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/worker"

	"github.com/mtlsrelay/mtlsrelay/internal/testutil"
)

// natscliVersion is the nats CLI that flow.sh is tested with, built from the
// Go module proxy into the user cache on first use.
const natscliVersion = "v0.5.1"

// startRelay starts what a flow talks to: an embedded NATS server with
// JetStream, an mTLS partner with certificates from a fresh CA, and a worker
// with connection "partner-api" to it. It returns the NATS URL.
func startRelay(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: end-to-end test, starts a relay and builds the example")
	}
	dir := t.TempDir()
	srv, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	ca, err := pki.NewCA("examples test CA")
	if err != nil {
		t.Fatal(err)
	}
	serverLeaf, err := ca.Issue(pki.LeafOptions{CommonName: "localhost", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	clientLeaf, err := ca.Issue(pki.LeafOptions{CommonName: "examples-flow", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	const password = "examples-test-only"
	p12, err := clientLeaf.PKCS12(password)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"client.p12": p12, "client.pass": []byte(password), "ca.pem": ca.CertPEM()} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p, err := partner.Start(partner.Options{Certificate: serverLeaf.TLSCertificate(), ClientCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	cfg := fmt.Sprintf(`
worker: {name: examples-worker, concurrency: 8, admin_addr: "off"}
profiles:
  partner: {keystore: "file:%[1]s/client.p12", password: "file:%[1]s/client.pass", truststore: "file:%[1]s/ca.pem"}
connections:
  partner-api: {base_url: "%[2]s/", profile: partner, timeout: 10s}
`, dir, p.URL())
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	testutil.RunWorker(t, nc, cfg, worker.WithLogger(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)))
	return srv.ClientURL()
}

// goBuild builds the main package pkg (relative to this folder) into dir.
func goBuild(t *testing.T, pkg, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// run runs a command with a deadline and returns its stdout; stderr is logged.
func run(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if stderr.Len() > 0 {
		t.Logf("%s stderr:\n%s", filepath.Base(name), stderr.String())
	}
	return stdout.String(), err
}

// resultLines decodes the JSON result lines of an example's output.
func resultLines(t *testing.T, out string) []*jobs.Result {
	t.Helper()
	var results []*jobs.Result
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue
		}
		r, err := jobs.DecodeResult([]byte(line))
		if err != nil {
			t.Fatalf("result line is not a result: %v\n%s", err, line)
		}
		results = append(results, r)
	}
	return results
}

// checkResults asserts that there is exactly one ok result per call of one run.
func checkResults(t *testing.T, results []*jobs.Result, count int, flow string) {
	t.Helper()
	if len(results) != count {
		t.Fatalf("got %d results, want %d", len(results), count)
	}
	seen := map[string]bool{}
	for _, r := range results {
		if seen[r.ID] {
			t.Errorf("result %s delivered twice", r.ID)
		}
		seen[r.ID] = true
		if !r.OK || r.Status != 200 || r.Error != nil {
			t.Errorf("result %s: ok=%v status=%d error=%+v, want a 200 from the partner", r.ID, r.OK, r.Status, r.Error)
		}
		if r.Metadata["flow"] != flow || r.Metadata["run"] == "" {
			t.Errorf("result %s: metadata %v not echoed", r.ID, r.Metadata)
		}
		if r.ClientCert == nil || !strings.Contains(r.ClientCert.Subject, "examples-flow") {
			t.Errorf("result %s: client certificate %+v, want CN=examples-flow", r.ID, r.ClientCert)
		}
		var echo struct {
			Path     string `json:"path"`
			RawQuery string `json:"raw_query"`
		}
		if err := json.Unmarshal([]byte(r.Body), &echo); err != nil || echo.Path != "/echo" || !strings.HasPrefix(echo.RawQuery, "n=") {
			t.Errorf("result %s: partner saw path %q query %q (err %v), want /echo?n=...", r.ID, echo.Path, echo.RawQuery, err)
		}
	}
}

// TestFlowGo runs examples/flow-go as a program against a real relay and
// checks that every call it enqueued came back through MTLSRELAY_RESULTS.
func TestFlowGo(t *testing.T) {
	url := startRelay(t)
	bin := goBuild(t, "./flow-go", t.TempDir())
	const count = 12
	out, err := run(t, 90*time.Second, nil, bin, "-nats", url, "-connection", "partner-api", "-path", "echo",
		"-count", fmt.Sprint(count), "-timeout", "60s", "-json")
	if err != nil {
		t.Fatalf("flow-go: %v\n%s", err, out)
	}
	checkResults(t, resultLines(t, out), count, "flow-go")

	// Its table output, and failure when nobody serves the connection.
	out, err = run(t, 60*time.Second, nil, bin, "-nats", url, "-count", "2")
	if err != nil || !strings.Contains(out, "2/2 results, 2 ok") {
		t.Errorf("flow-go table run: err %v\n%s", err, out)
	}
	// A call to a connection no worker knows still gets its one result
	// (error unknown_connection): the flow completes, with 0 ok.
	out, err = run(t, 60*time.Second, nil, bin, "-nats", url, "-connection", "nobody-has-this", "-count", "1", "-timeout", "30s")
	if err != nil || !strings.Contains(out, "unknown_connection") || !strings.Contains(out, "1/1 results, 0 ok") {
		t.Errorf("flow-go for an unknown connection: err %v\n%s", err, out)
	}
}

// natsCLI returns a nats CLI binary: the one on PATH, or one built with
// `go install github.com/nats-io/natscli/nats@natscliVersion` into the user
// cache (about a minute on two cores the first time, then reused).
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bindir := filepath.Join(cache, "mtlsrelay-test", "natscli-"+natscliVersion)
	bin := filepath.Join(bindir, "nats")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if testing.Short() {
		t.Skip("-short: not building the nats CLI")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/nats-io/natscli/nats@"+natscliVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+bindir, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the nats CLI from the Go module proxy: %v\n%s", err, out)
	}
	t.Logf("built nats CLI %s in %s", natscliVersion, time.Since(start).Round(time.Second))
	return bin
}

// TestFlowNATSCLI runs examples/flow-nats-cli/flow.sh, which uses only the
// nats CLI, against a real relay.
func TestFlowNATSCLI(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatalf("flow.sh needs bash: %v", err)
	}
	nats := natsCLI(t)
	url := startRelay(t)
	const count = 6
	out, err := run(t, 2*time.Minute, []string{"NATS_URL=" + url, "NATS=" + nats, "WAIT=60s", "HOME=" + t.TempDir()},
		"bash", "./flow-nats-cli/flow.sh", "partner-api", fmt.Sprint(count), "echo")
	if err != nil {
		t.Fatalf("flow.sh: %v\n%s", err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("%d/%d results, %d ok", count, count, count)) {
		t.Errorf("flow.sh summary missing:\n%s", out)
	}
	checkResults(t, resultLines(t, out), count, "flow.sh")
}

// TestPartnerProgram runs examples/partner as deploy/compose.yaml does: once
// with -gen-only to write the certificates, then serving with them; a client
// holding client.pem gets through, one without a certificate does not.
func TestPartnerProgram(t *testing.T) {
	bin := goBuild(t, "./partner", t.TempDir())
	certs := t.TempDir()
	env := []string{"PARTNER_KEYSTORE_PASSWORD=examples-test-only"}
	if out, err := run(t, time.Minute, env, bin, "-certs", certs, "-hosts", "partner,127.0.0.1", "-gen-only"); err != nil {
		t.Fatalf("partner -gen-only: %v\n%s", err, out)
	}
	for _, name := range []string{"ca.pem", "server.pem", "server.key", "client.p12", "client.pass", "client.pem"} {
		if _, err := os.Stat(filepath.Join(certs, name)); err != nil {
			t.Errorf("partner -gen-only did not write %s", name)
		}
	}
	if pass, _ := os.ReadFile(filepath.Join(certs, "client.pass")); string(pass) != "examples-test-only" {
		t.Errorf("client.pass = %q, want the password from PARTNER_KEYSTORE_PASSWORD", pass)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-certs", certs, "-addr", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "partner: listening on "); ok {
				addr <- strings.TrimSuffix(strings.Fields(a)[0], ",")
			}
		}
	}()
	var url string
	select {
	case a := <-addr:
		url = "https://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("partner did not say where it listens")
	}
	client := func(withCert bool) *http.Client {
		caPEM, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		cfg := &tls.Config{RootCAs: pool, ServerName: "partner"}
		if withCert {
			pem := filepath.Join(certs, "client.pem")
			cert, err := tls.LoadX509KeyPair(pem, pem)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	resp, err := client(true).Get(url + "/echo")
	if err != nil {
		t.Fatalf("GET /echo with the generated client certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /echo: status %d", resp.StatusCode)
	}
	if resp, err := client(false).Get(url + "/echo"); err == nil {
		resp.Body.Close()
		t.Errorf("GET /echo without a client certificate succeeded (status %d); the partner must require one", resp.StatusCode)
	}
}
