// Package testvault starts a real HashiCorp Vault server in dev mode for
// tests: the server built from integration/tools/vault (Vault v1.19.0, a
// module of its own, since the product never links Vault's server code).
//
// The binary is found at $MTLSRELAY_VAULT_BIN, else at
// os.UserCacheDir()/mtlsrelay/vault-1.19.0; when neither exists it is built
// there (about 6 minutes on 2 cores the first time, seconds with a warm Go
// build cache). Tests never skip for want of a binary.
//
// A dev server keeps everything in memory and starts unsealed, with KV v2
// mounted at secret/. Restart loses every secret, mount and token except the
// root token, whose id is fixed: tests seed again after a Restart.
package testvault

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/mtlsrelay/mtlsrelay/internal/testserver"
)

// Version is the Vault version the tools module builds.
const Version = "1.19.0"

// BinaryEnv names the environment variable that points at a prebuilt binary.
const BinaryEnv = "MTLSRELAY_VAULT_BIN"

// Vault is a running dev server. Its methods must be called from the test's
// goroutine, as they fail the test.
type Vault struct {
	// Addr is the server's address, e.g. "http://127.0.0.1:43121"
	// ("https://..." with WithTLS).
	Addr string
	// RootToken is the dev server's root token; it survives Restart.
	RootToken string
	// Client is an API client for Addr, logged in with RootToken.
	Client *api.Client
	// CACert is the path of the CA certificate of the server's TLS
	// certificate with WithTLS, else "".
	CACert string

	t       testing.TB
	bin     string
	port    int
	opts    options
	dir     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// Option configures Start.
type Option func(*options)

type options struct {
	tls bool
}

// WithTLS serves HTTPS with a certificate made by Vault (-dev-tls), for
// tests of the cert auth method and of ca_cert. Vault.CACert is its CA.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// Start starts a dev server on a free loopback port, waits until it is
// healthy and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Vault {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs a Vault server, built from the module proxy when not cached")
	}
	v := &Vault{t: t, bin: Binary(t), RootToken: "root-" + testserver.RandomHex(12), dir: t.TempDir()}
	for _, o := range opts {
		o(&v.opts)
	}
	var err error
	for range 5 {
		if v.port, err = freePortPair(); err != nil {
			continue
		}
		if err = v.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("testvault: %v", err)
	}
	t.Cleanup(v.Stop)
	scheme := "http"
	if v.opts.tls {
		scheme = "https"
		v.CACert = filepath.Join(v.dir, "tls", "vault-ca.pem")
	}
	v.Addr = fmt.Sprintf("%s://127.0.0.1:%d", scheme, v.port)
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	if v.opts.tls {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: v.CACert}); err != nil {
			t.Fatalf("testvault: %v", err)
		}
	}
	if v.Client, err = api.NewClient(cfg); err != nil {
		t.Fatalf("testvault: %v", err)
	}
	v.Client.SetToken(v.RootToken)
	return v
}

// Stop stops the server; the test's cleanup calls it too. Stopping a stopped
// server does nothing.
func (v *Vault) Stop() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil {
		return
	}
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.exited:
	case <-time.After(15 * time.Second):
		_ = v.cmd.Process.Kill()
		<-v.exited
	}
	v.cmd = nil
}

// Restart stops the server and starts a fresh one on the same port with the
// same root token. Dev mode keeps nothing else: seed again.
func (v *Vault) Restart() {
	v.t.Helper()
	v.Stop()
	var err error
	// The port was ours a moment ago; give the kernel a few tries to free it.
	for range 10 {
		if err = v.start(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	v.t.Fatalf("testvault: restart on port %d: %v", v.port, err)
}

// Logs returns what the server printed so far, for a failing test to show.
func (v *Vault) Logs() string {
	b, _ := os.ReadFile(v.logPath)
	return string(b)
}

// start runs the server on v.port and waits until it is healthy.
func (v *Vault) start() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	args := []string{"server", "-dev",
		"-dev-root-token-id=" + v.RootToken,
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(v.port),
		"-dev-no-store-token",
	}
	if v.opts.tls {
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+filepath.Join(v.dir, "tls"))
		if err := os.MkdirAll(filepath.Join(v.dir, "tls"), 0o700); err != nil {
			return err
		}
	}
	v.logPath = filepath.Join(v.dir, fmt.Sprintf("vault-%d.log", time.Now().UnixNano()))
	logFile, err := os.Create(v.logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(v.bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// A clean environment: no VAULT_* of the developer's shell, and a HOME
	// of its own so nothing is read from or written to ~/.vault-token.
	cmd.Env = []string{"HOME=" + v.dir, "PATH=" + os.Getenv("PATH"), "VAULT_LOG_LEVEL=warn"}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", v.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	if err := waitHealthy(v.port, v.opts.tls, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		out, _ := os.ReadFile(v.logPath)
		return fmt.Errorf("vault dev server on port %d: %w\n%s", v.port, err, testserver.Tail(out, 3000))
	}
	v.cmd, v.exited = cmd, exited
	return nil
}

// waitHealthy polls /v1/sys/health until it answers 200.
func waitHealthy(port int, useTLS bool, exited <-chan struct{}) error {
	scheme := "http"
	client := &http.Client{Timeout: time.Second}
	if useTLS {
		scheme = "https"
		// Only the health probe skips verification; the API client checks
		// the server against the CA Vault wrote.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // probe of a local test server
		client.Transport = tr
	}
	url := fmt.Sprintf("%s://127.0.0.1:%d/v1/sys/health", scheme, port)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited before it was healthy")
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("not healthy within 60s")
}

// freePortPair returns a free loopback port p whose neighbour p+1 is free
// too: dev mode puts its cluster listener on the next port.
func freePortPair() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		ln.Close()
		if err != nil {
			continue
		}
		ln2.Close()
		return p, nil
	}
	return 0, errors.New("no free pair of loopback ports")
}

// PutKV writes data as a new version of the KV v2 secret at mount/path and
// returns its version number.
func (v *Vault) PutKV(mount, path string, data map[string]any) int {
	v.t.Helper()
	s, err := v.Client.KVv2(mount).Put(context.Background(), path, data)
	if err != nil {
		v.t.Fatalf("testvault: put %s/%s: %v", mount, path, err)
	}
	return s.VersionMetadata.Version
}

// Write writes data to path with the root token, failing the test on error.
func (v *Vault) Write(path string, data map[string]any) *api.Secret {
	v.t.Helper()
	s, err := v.Client.Logical().Write(path, data)
	if err != nil {
		v.t.Fatalf("testvault: write %s: %v", path, err)
	}
	return s
}

// Policy creates or replaces an ACL policy.
func (v *Vault) Policy(name, hcl string) {
	v.t.Helper()
	if err := v.Client.Sys().PutPolicy(name, hcl); err != nil {
		v.t.Fatalf("testvault: policy %s: %v", name, err)
	}
}

// Enable mounts a secrets engine (kind "pki", "kv-v2"...) at path.
func (v *Vault) Enable(path, kind string) {
	v.t.Helper()
	if err := v.Client.Sys().Mount(path, &api.MountInput{Type: kind, Config: api.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
		v.t.Fatalf("testvault: mount %s at %s: %v", kind, path, err)
	}
}

// EnableAuth enables an auth method (kind "approle", "cert"...) at path.
func (v *Vault) EnableAuth(path, kind string) {
	v.t.Helper()
	if err := v.Client.Sys().EnableAuthWithOptions(path, &api.EnableAuthOptions{Type: kind}); err != nil {
		v.t.Fatalf("testvault: enable auth %s at %s: %v", kind, path, err)
	}
}

// PKI mounts the PKI engine at mount, generates a root CA and a role that
// issues client certificates for any name, and returns the root CA. roleOpts
// override the role's settings (e.g. "max_ttl").
func (v *Vault) PKI(mount, role string, roleOpts map[string]any) *x509.Certificate {
	v.t.Helper()
	v.Enable(mount, "pki")
	s := v.Write(mount+"/root/generate/internal", map[string]any{
		"common_name": "mtlsrelay test Vault PKI root", "ttl": "87600h", "key_type": "ec", "key_bits": 256,
	})
	caPEM, _ := s.Data["certificate"].(string)
	block, _ := pem.Decode([]byte(caPEM))
	if block == nil {
		v.t.Fatalf("testvault: %s/root/generate returned no certificate", mount)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		v.t.Fatalf("testvault: parse PKI root: %v", err)
	}
	r := map[string]any{
		"allow_any_name": true, "enforce_hostnames": false, "client_flag": true, "server_flag": false,
		"key_type": "ec", "key_bits": 256, "max_ttl": "24h",
	}
	for k, val := range roleOpts {
		r[k] = val
	}
	v.Write(mount+"/roles/"+role, r)
	return ca
}

// AppRole enables the approle auth method at mount (once), creates role
// with the given policies and settings (e.g. "token_ttl": "2s") and returns
// its role_id and a fresh secret_id.
func (v *Vault) AppRole(mount, role string, policies []string, roleOpts map[string]any) (roleID, secretID string) {
	v.t.Helper()
	auths, err := v.Client.Sys().ListAuth()
	if err != nil {
		v.t.Fatalf("testvault: list auth: %v", err)
	}
	if _, ok := auths[mount+"/"]; !ok {
		v.EnableAuth(mount, "approle")
	}
	r := map[string]any{"token_policies": strings.Join(policies, ",")}
	for k, val := range roleOpts {
		r[k] = val
	}
	v.Write("auth/"+mount+"/role/"+role, r)
	s, err := v.Client.Logical().Read("auth/" + mount + "/role/" + role + "/role-id")
	if err != nil || s == nil {
		v.t.Fatalf("testvault: role-id of %s: %v", role, err)
	}
	roleID, _ = s.Data["role_id"].(string)
	s = v.Write("auth/"+mount+"/role/"+role+"/secret-id", nil)
	secretID, _ = s.Data["secret_id"].(string)
	return roleID, secretID
}

// Token creates a token with the given policies and returns it.
func (v *Vault) Token(policies ...string) string {
	v.t.Helper()
	s, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: policies, NoDefaultPolicy: false})
	if err != nil {
		v.t.Fatalf("testvault: token create: %v", err)
	}
	return s.Auth.ClientToken
}
