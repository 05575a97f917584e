package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// runCLI runs the real binary and returns its stdout, stderr and exit code.
func runCLI(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(mtlsrelayBinary(t), args...)
	cmd.Env = append(cmd.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// `mtlsrelay test CONNECTION` explains what it found, and fails when the
// partner refuses the certificate (TLS 1.3: only a request shows it).
func TestCLITestConnection(t *testing.T) {
	p := startPartner(t)
	rejecting := startPartner(t, clientCAs("other-ca.pem"))
	cfg := writeConfig(t, `
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "env:MTLSRELAY_TEST_PASSWORD", truststore: "file:FIX/ca.pem"}
connections:
  good: {base_url: "PARTNER/echo", profile: p}
  refused: {base_url: "REJECTING/echo", profile: p}
`, "PARTNER", p.URL(), "REJECTING", rejecting.URL())
	env := []string{"MTLSRELAY_TEST_PASSWORD=" + fixturePassword}

	out, errOut, code := runCLI(t, env, "test", "good", "--config", cfg)
	if code != 0 {
		t.Fatalf("test good: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"keystore", "mtlsrelay-test-client", "days left", "TLS 1.3", "server chain", "accepted: GET"} {
		if !strings.Contains(out, want) {
			t.Errorf("test good output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runCLI(t, env, "test", "refused", "--config", cfg, "--json")
	if code != 2 {
		t.Fatalf("test refused: exit %d, want 2\n%s", code, out)
	}
	var rep struct {
		Accepted bool        `json:"accepted"`
		Error    *jobs.Error `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Accepted || rep.Error == nil || rep.Error.Code != jobs.CodeClientCertRejected {
		t.Errorf("test refused: %v %+v", err, rep)
	}
	assertNoSecrets(t, "test output", out+errOut)

	// The config's NATS server is down: the connections the file defines
	// are tested all the same, and the report says the registry was not
	// read. Before, the command failed with "context deadline exceeded".
	down := writeConfig(t, `
nats: {url: "nats://127.0.0.1:CLOSED"}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "env:MTLSRELAY_TEST_PASSWORD", truststore: "file:FIX/ca.pem"}
connections:
  good: {base_url: "PARTNER/echo", profile: p}
`, "PARTNER", p.URL(), "CLOSED", closedPort(t))
	out, errOut, code = runCLI(t, env, "test", "good", "--config", down)
	if code != 0 {
		t.Fatalf("test good with NATS down: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"FAIL registry", "not read at nats://127.0.0.1:", "tested what the config file defines", "accepted: GET"} {
		if !strings.Contains(out, want) {
			t.Errorf("test good with NATS down: output lacks %q:\n%s", want, out)
		}
	}
	// VAULT_ADDR without a token in the environment of a worker whose
	// profiles do not use Vault: Vault does not start, and nothing else
	// is stopped by it.
	out, errOut, code = runCLI(t, append(env, "VAULT_ADDR=http://127.0.0.1:"+closedPort(t)), "test", "good", "--config", cfg)
	if code != 0 || !strings.Contains(out, "accepted: GET") {
		t.Errorf("test good with VAULT_ADDR alone set: exit %d\n%s%s", code, out, errOut)
	}
	// A top-level section that no provider reads (a misspelt vault:) is
	// refused, named, before anything runs.
	typo := writeConfig(t, `
vualt: {address: "https://vault.example:8200"}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "env:MTLSRELAY_TEST_PASSWORD", truststore: "file:FIX/ca.pem"}
connections:
  good: {base_url: "PARTNER/echo", profile: p}
`, "PARTNER", p.URL())
	out, errOut, code = runCLI(t, env, "test", "good", "--config", typo)
	if code == 0 || !strings.Contains(out+errOut, `"vualt"`) {
		t.Errorf("test with a misspelt section: exit %d, want a failure naming it\n%s%s", code, out, errOut)
	}
	out, _, code = runCLI(t, env, "test", "elsewhere", "--config", down)
	if code != 2 || !strings.Contains(out, "FAIL registry") || !strings.Contains(out, "unknown_connection") {
		t.Errorf("test of a connection the file lacks, NATS down: exit %d, want 2 with the registry step and unknown_connection:\n%s", code, out)
	}
}

func TestCLIKeystoreInspect(t *testing.T) {
	env := []string{"KS_PASS=" + fixturePassword}
	out, errOut, code := runCLI(t, env, "keystore", "inspect", fixture(t, "client-multi.jks"), "--password-env", "KS_PASS")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"format: jks", "alpha", "beta", "valid,", "days left"} {
		if !strings.Contains(strings.ToLower(out), strings.ToLower(want)) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	_, errOut, code = runCLI(t, []string{"KS_PASS=wrong"}, "keystore", "inspect", fixture(t, "client-openssl.p12"), "--password-env", "KS_PASS")
	if code == 0 || !strings.Contains(errOut, "keystore_password_wrong") {
		t.Errorf("wrong password: exit %d, %s", code, errOut)
	}
	assertNoSecrets(t, "inspect output", out+errOut)
}

// `mtlsrelay call` against a running worker: durable with wait, direct,
// --no-wait, and exit status 2 for a result that is not ok.
func TestCLICall(t *testing.T) {
	srv := startNATS(t)
	p := startPartner(t)
	startWorker(t, srv.ClientURL(), configYAML(t, `
worker: {admin_addr: "off"}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p}
`, "PARTNER", p.URL()))
	url := srv.ClientURL()
	out, errOut, code := runCLI(t, nil, "call", "partner", "--nats", url, "-X", "POST", "--path", "echo", "-H", "X-A: 1", "--query", "q=v", "--data", "hello")
	if code != 0 {
		t.Fatalf("call: exit %d %s", code, errOut)
	}
	var r jobs.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil || !r.OK || !strings.Contains(r.Body, `"method":"POST"`) || !strings.Contains(r.Body, "q=v") {
		t.Errorf("call result: %v %s", err, out)
	}
	out, _, code = runCLI(t, nil, "call", "partner", "--nats", url, "--path", "echo", "--direct")
	if code != 0 || !strings.Contains(out, `"ok": true`) {
		t.Errorf("direct: exit %d %s", code, out)
	}
	out, _, code = runCLI(t, nil, "call", "partner", "--nats", url, "--path", "status/404")
	if code != 2 || !strings.Contains(out, `"status": 404`) {
		t.Errorf("404: exit %d, want 2\n%s", code, out)
	}
	out, _, code = runCLI(t, nil, "call", "partner", "--nats", url, "--path", "echo", "--no-wait", "--id", "cli-nowait-1")
	if code != 0 || !strings.Contains(out, `"reply_to": "mtlsrelay.results.cli-nowait-1"`) {
		t.Errorf("no-wait: exit %d %s", code, out)
	}
	out, _, code = runCLI(t, nil, "call", "partner", "--nats", url, "--soap-action", "urn:x", "--path", "soap", "--data", "<a:B xmlns:a=\"urn:a\"/>")
	if code != 0 || !strings.Contains(out, "urn:x") {
		t.Errorf("soap: exit %d %s", code, out)
	}
	// --progress: the failed first attempt on stderr, the final result on stdout.
	out, errOut, code = runCLI(t, nil, "call", "partner", "--nats", url, "--path", "flaky/cli-progress", "--query", "fail=1", "--query", "code=503", "--progress")
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.OK || r.Attempt != 2 || r.Progress {
		t.Errorf("progress: exit %d, final result %v %s", code, err, out)
	}
	var p1 jobs.Result
	if err := json.Unmarshal([]byte(strings.TrimSpace(errOut)), &p1); err != nil || !p1.Progress || p1.Attempt != 1 || p1.Status != 503 || p1.RetryInMS <= 0 {
		t.Errorf("progress: stderr should be one progress line for attempt 1: %v\n%s", err, errOut)
	}
	_, errOut, code = runCLI(t, nil, "call", "partner", "--nats", url, "--path", "echo", "--progress", "--direct")
	if code == 0 || !strings.Contains(errOut, "durable") {
		t.Errorf("--progress --direct: exit %d, want a refusal naming durable calls: %s", code, errOut)
	}
	// --data @FILE over 256 KiB goes by body_ref; --output writes a body
	// that came back by body_ref.
	dir := t.TempDir()
	in := filepath.Join(dir, "in.bin")
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, partner.Pattern(3<<20)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, errOut, code = runCLI(t, nil, "call", "partner", "--nats", url, "-X", "POST", "--path", "sha256", "--data", "@"+in)
	var digest partner.BodyDigest
	if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil || json.Unmarshal([]byte(r.Body), &digest) != nil ||
		digest.Size != 3<<20 || digest.SHA256 != partner.PatternSHA256(3<<20) {
		t.Errorf("--data @3MiB-file: exit %d, the partner got %+v\n%s%s", code, digest, out, errOut)
	}
	outFile := filepath.Join(dir, "out.bin")
	out, errOut, code = runCLI(t, nil, "call", "partner", "--nats", url, "--path", "bytes", "--query", "n=2000000", "--query", "pattern=1", "--output", outFile)
	got, _ := os.ReadFile(outFile)
	sum := sha256.Sum256(got)
	if code != 0 || len(got) != 2000000 || hex.EncodeToString(sum[:]) != partner.PatternSHA256(2000000) || !strings.Contains(out, `"body_ref"`) {
		t.Errorf("--output: exit %d, %d bytes written\n%s%s", code, len(got), out, errOut)
	}
}

// `mtlsrelay test` also finds a connection and its profile that live only
// in the registry, sealed password included, as a worker would.
func TestCLITestConnectionFromRegistry(t *testing.T) {
	srv := startNATS(t)
	p := startPartner(t)
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	env := []string{"MTLSRELAY_REGISTRY_KEY=" + key, "KS_PASS=" + fixturePassword}
	reg := func(args ...string) {
		t.Helper()
		args = append(args, "--nats", srv.ClientURL(), "--key-env", "MTLSRELAY_REGISTRY_KEY")
		if out, errOut, code := runCLI(t, env, args...); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	reg("profile", "put", "reg-only", "--keystore", fixture(t, "client-openssl.p12"), "--password-env", "KS_PASS", "--truststore", fixture(t, "ca.pem"))
	reg("connection", "put", "reg-only-api", "--base-url", p.URL()+"/echo", "--profile", "reg-only")
	cfg := writeConfig(t, "registry: {key: \"env:MTLSRELAY_REGISTRY_KEY\"}\n")
	out, errOut, code := runCLI(t, env, "test", "reg-only-api", "--config", cfg, "--nats", srv.ClientURL())
	if code != 0 || !strings.Contains(out, "accepted: GET") {
		t.Fatalf("test of a registry connection: exit %d\n%s%s", code, out, errOut)
	}
	assertNoSecrets(t, "test output", out+errOut)
}
