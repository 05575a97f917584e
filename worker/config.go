package worker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Config is the worker's YAML config file. Every field is documented here,
// once; zero values mean the defaults named in the comments.
type Config struct {
	// NATS says where the NATS cluster is, or how to run the embedded server.
	NATS NATSConfig `yaml:"nats"`
	// Worker tunes this worker process.
	Worker WorkerConfig `yaml:"worker"`
	// Log sets the log level and format.
	Log LogConfig `yaml:"log"`
	// Profiles are the mTLS profiles by name ("keystore in the agent's config file").
	Profiles map[string]secrets.Profile `yaml:"profiles"`
	// Connections are the partner endpoints by name.
	Connections map[string]catalog.Connection `yaml:"connections"`
	// Providers holds the sections of the secret providers (vault:,
	// cyberark:...), each decoded by its provider (secrets.Provider) when
	// the worker starts, which refuses a section that no provider claims.
	// docs/SECRETS-VAULT.md and docs/SECRETS-CYBERARK.md describe theirs.
	Providers map[string]yaml.Node `yaml:",inline"`
	// Registry configures the shared registry (NATS KV bucket
	// mtlsrelay_registry), whose profiles and connections the worker
	// watches and applies live; the config file's win for names both define.
	Registry RegistryConfig `yaml:"registry"`
	// Tenants, when set, make flows principals: each tenant's calls arrive
	// on <prefix>.calls.<tenant>.<connection> (direct calls on
	// <prefix>.rpc.<tenant>.<connection>), may name only the connections
	// it lists, and have results and duplicate windows of their own. Every
	// worker of a relay must have the same tenants.
	Tenants map[string]TenantConfig `yaml:"tenants"`
	// Proxies are the egress proxies connections may go through, by name
	// (worker.proxy, a connection's proxy).
	Proxies map[string]catalog.Proxy `yaml:"proxies"`

	// Dir is the folder relative file: references are resolved against: the
	// config file's folder, or the working directory.
	Dir string `yaml:"-"`
}

// NATSConfig says how the worker reaches NATS.
type NATSConfig struct {
	// URL of the NATS cluster (comma-separated servers). Empty: start the
	// embedded server with JetStream.
	URL string `yaml:"url"`
	// Prefix of every subject; default "mtlsrelay".
	Prefix string `yaml:"prefix"`
	// Replicas of the streams the worker creates; default 1 (3 on a cluster).
	Replicas int `yaml:"replicas"`
	// Partitions spreads durable calls over this many streams by their
	// connection, so that no one stream's leader carries them all
	// (docs/SCALING.md). The NATS server must map the subjects
	// (mtlsrelay.calls.* to mtlsrelay.part.{{partition(N,1)}}.calls.{{wildcard(1)}});
	// the embedded server does. Every worker must have the same. Default 0:
	// one stream. Not with tenants, each of which has its own stream.
	Partitions int `yaml:"partitions"`
	// ResultsMaxAge is how long MTLSRELAY_RESULTS keeps results; default 24h.
	ResultsMaxAge catalog.Duration `yaml:"results_max_age"`
	// CredsFile is a NATS credentials file (JWT + NKey seed), for servers
	// in operator mode.
	CredsFile string `yaml:"creds_file"`
	// User and Password authenticate with a user name; Password is a secret
	// reference (env:NATS_PASSWORD, file:..., value:...).
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Token is a secret reference to an authorization token.
	Token string `yaml:"token"`
	// NKeySeedFile is a file holding an NKey user seed (SU...).
	NKeySeedFile string `yaml:"nkey_seed_file"`
	// TLS secures the connection to NATS, with a client certificate for
	// mutual TLS when the servers demand one.
	TLS NATSTLSConfig `yaml:"tls"`
	// Embedded configures the embedded server used when URL is empty.
	Embedded EmbeddedConfig `yaml:"embedded"`
	// AllowPlaintext lets credentials (creds_file, user/password, token,
	// nkey) go to a non-loopback server over plain nats://. Default false:
	// such a config is refused; use tls:// (or tls.ca_file) instead.
	AllowPlaintext bool `yaml:"allow_plaintext"`
}

// NATSTLSConfig is TLS to the NATS servers. Files are PEM.
type NATSTLSConfig struct {
	// CAFile holds the CAs that sign the NATS servers' certificates;
	// default the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the worker's client certificate and key
	// for servers that verify clients (mTLS to NATS).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name verified in the servers' certificates.
	ServerName string `yaml:"server_name"`
}

// EmbeddedConfig configures the embedded NATS server.
type EmbeddedConfig struct {
	// Listen is host:port for NATS clients; default 127.0.0.1:4222.
	Listen string `yaml:"listen"`
	// DataDir holds JetStream's files; default ./mtlsrelay-data.
	DataDir string `yaml:"data_dir"`
	// AccountsFile is a nats-server configuration file holding
	// authorization (accounts with users, nkeys, permissions) for the
	// embedded server, e.g. docs/nats-accounts.conf. A non-loopback Listen
	// is refused without it or Users.
	AccountsFile string `yaml:"accounts_file"`
	// Users are user/password pairs (passwords are secret references)
	// allowed to connect to the embedded server with full permissions: the
	// simplest authentication for a non-loopback Listen.
	Users []EmbeddedUser `yaml:"users"`
}

// EmbeddedUser is one user of the embedded server.
type EmbeddedUser struct {
	User     string `yaml:"user"`
	Password string `yaml:"password"`
}

// WorkerConfig tunes one worker.
type WorkerConfig struct {
	// Name identifies the worker in results and logs; default host-pid.
	Name string `yaml:"name"`
	// Concurrency is the number of durable calls in flight; default 64.
	Concurrency int `yaml:"concurrency"`
	// DirectConcurrency is the number of direct calls in flight, admitted
	// apart from durable ones so that a direct call never waits behind
	// the durable consumer; default Concurrency. Direct calls beyond it
	// wait in the worker, up to as many again and for at most 2 s; past
	// that a request is not answered (its caller times out and may try
	// another worker).
	DirectConcurrency int `yaml:"direct_concurrency"`
	// Zones are the zones whose calls this worker runs (a connection's
	// zone); default ["default"]. Workers of zone default take the calls
	// flows publish and forward those of other zones to them; a worker
	// of other zones only takes what was forwarded to its zones.
	Zones []string `yaml:"zones"`
	// AdminAddr serves /healthz, /readyz and /metrics; default
	// 127.0.0.1:9464; "off" disables it.
	AdminAddr string `yaml:"admin_addr"`
	// AckWait is how long JetStream waits for a worker's ack before
	// redelivering; running calls are kept alive with InProgress. Default 30s.
	AckWait catalog.Duration `yaml:"ack_wait"`
	// MaxDeliver bounds how many times JetStream delivers one call, its
	// retries and hand-backs included; default 1000. A call at its last
	// delivery ends there (max_deliveries when it could not be attempted),
	// and one that reaches the bound unended is dead-lettered.
	MaxDeliver int `yaml:"max_deliver"`
	// InlineBodyMax is the largest response body a result holds itself;
	// a larger one goes to the Object Store bucket mtlsrelay_bodies and the
	// result carries a body_ref. Default 256 KiB, and never more than the
	// NATS server's max_payload allows.
	InlineBodyMax int64 `yaml:"inline_body_max"`
	// MaxMemory bounds, in bytes, what the calls in flight may hold (their
	// messages, inline bodies, result encodings, stream buffers), besides
	// concurrency: a call that does not fit waits in JetStream. Default
	// half the container's memory limit when the cgroup sets one, else no
	// bound but concurrency. Negative: no bound.
	MaxMemory int64 `yaml:"max_memory"`
	// RetryBase is the first retry delay, doubled per attempt with jitter;
	// default 1s.
	RetryBase catalog.Duration `yaml:"retry_base"`
	// RetryMax caps a retry delay, Retry-After included; default 5m.
	RetryMax catalog.Duration `yaml:"retry_max"`
	// ShutdownGrace is how long calls in flight may run after SIGTERM
	// before they are handed back; default 25s.
	ShutdownGrace catalog.Duration `yaml:"shutdown_grace"`
	// FetchBatch caps how many calls one pull asks for; default Concurrency.
	FetchBatch int `yaml:"fetch_batch"`
	// ReplyPrefixes are the subject prefixes besides <prefix>.results a
	// call's reply_to (or a direct call's reply subject) may be under;
	// default ["_INBOX"]. Anything else ($KV..., $JS..., the relay's own
	// streams) is refused with invalid_call and nothing is published there.
	ReplyPrefixes []string `yaml:"reply_prefixes"`
	// Proxy is the egress proxy of every connection that names none (a key
	// of proxies); empty: direct.
	Proxy string `yaml:"proxy"`
	// GCPercent is Go's garbage collection target (GOGC) of the worker
	// process. Default 400 when a memory limit bounds the heap (GOMEMLIMIT,
	// or the container's limit, which the worker then applies itself), else
	// Go's 100: the worker's live heap is small and its allocation rate
	// high, so at 100 the collector runs many times a second; with a limit
	// it collects at 400 and, near the limit, as often as the limit needs.
	// The GOGC environment variable wins; a GOMEMLIMIT that leaves the
	// container too little headroom keeps 100. See TuneRuntime.
	GCPercent int `yaml:"gc_percent"`
	// CertExpiryWarnDays is how many days before a profile's client
	// certificate expires the worker logs a warning (at load and daily) and
	// reports it in mtlsrelay_client_cert_expiring; default 30, negative
	// disables.
	CertExpiryWarnDays int `yaml:"cert_expiry_warn_days"`
}

// TenantConfig is what one tenant's flows may do.
type TenantConfig struct {
	// Connections the tenant's calls may name; ["*"] for all. A call naming
	// another gets unknown_connection, as if it did not exist.
	Connections []string `yaml:"connections"`
	// BodiesMaxBytes bounds the tenant's bodies bucket,
	// mtlsrelay_bodies_<tenant>: uploads and stored response bodies past
	// it fail. 0 is no bound but the account's.
	BodiesMaxBytes int64 `yaml:"bodies_max_bytes"`
}

// Allows reports whether the tenant may call connection.
func (t TenantConfig) Allows(connection string) bool {
	for _, c := range t.Connections {
		if c == "*" || c == connection {
			return true
		}
	}
	return false
}

// TenantNames returns the configured tenants, sorted.
func (c *Config) TenantNames() []string { return sortedKeys(c.Tenants) }

// RegistryConfig configures the worker's use of the shared registry.
type RegistryConfig struct {
	// Key references the 32-byte AES-256 key, written in base64 or hex
	// (`openssl rand -base64 32`), that opens the passwords sealed in the
	// registry: env:MTLSRELAY_REGISTRY_KEY, file:/etc/mtlsrelay/registry.key
	// (relative to the config file's folder) or a vault: reference. Every
	// worker and the command line need the same key. Empty: no key, and a
	// registry profile with a sealed password fails with secret_unavailable.
	Key string `yaml:"key"`
	// Disabled stops the worker from reading the registry: only the config
	// file's profiles and connections are used. Default false.
	Disabled bool `yaml:"disabled"`
	// AllowLocalRefs lets registry profiles reference the worker's own
	// file: and env: secrets. Default false: a registry profile may name
	// only registry:, vault:, vault-pki: and cyberark: secrets, so write
	// access to the registry does not give use of every identity the
	// worker can read.
	AllowLocalRefs bool `yaml:"allow_local_refs"`
}

// LogConfig sets logging.
type LogConfig struct {
	// Level is trace, debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is json, console or auto (default: console on a terminal).
	Format string `yaml:"format"`
}

// Defaults of WorkerConfig.
const (
	DefaultConcurrency   = 64
	DefaultAdminAddr     = "127.0.0.1:9464"
	DefaultRetryBase     = time.Second
	DefaultRetryMax      = 5 * time.Minute
	DefaultShutdownGrace = 25 * time.Second
)

// LoadConfig reads and validates a YAML config file. Unknown keys are errors,
// so a misspelt key is caught at start rather than silently ignored.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err == nil {
		cfg.Dir = abs
	}
	return cfg, nil
}

// ParseConfig decodes and validates YAML config data.
func ParseConfig(data []byte) (*Config, error) {
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) applyDefaults() {
	w := &c.Worker
	if w.Concurrency <= 0 {
		w.Concurrency = DefaultConcurrency
	}
	if w.AdminAddr == "" {
		w.AdminAddr = DefaultAdminAddr
	}
	if w.RetryBase <= 0 {
		w.RetryBase = catalog.Duration(DefaultRetryBase)
	}
	if w.RetryMax <= 0 {
		w.RetryMax = catalog.Duration(DefaultRetryMax)
	}
	if w.ShutdownGrace <= 0 {
		w.ShutdownGrace = catalog.Duration(DefaultShutdownGrace)
	}
	if w.FetchBatch <= 0 {
		w.FetchBatch = w.Concurrency
	}
	if len(w.Zones) == 0 {
		w.Zones = []string{jobs.DefaultZone}
	}
	if len(w.ReplyPrefixes) == 0 {
		w.ReplyPrefixes = []string{jobs.DefaultReplyPrefix}
	}
	if w.Name == "" {
		host, _ := os.Hostname()
		w.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.NATS.Embedded.Listen == "" {
		c.NATS.Embedded.Listen = "127.0.0.1:4222"
	}
	if c.NATS.Embedded.DataDir == "" {
		c.NATS.Embedded.DataDir = "mtlsrelay-data"
	}
}

// Validate checks every profile and connection and reports all problems.
func (c *Config) Validate() error {
	var errs []error
	for _, name := range sortedKeys(c.Profiles) {
		p := c.Profiles[name]
		if err := p.Validate(); err != nil {
			// A config error is the operator's to fix, not a call's result:
			// it carries no wire code (a call on a profile the registry
			// holds gets keystore_invalid for the same fault).
			errs = append(errs, fmt.Errorf("profile %s: %s", name, jobs.AsError(err).Message))
		}
	}
	for _, name := range sortedKeys(c.Connections) {
		conn := c.Connections[name]
		if err := conn.Validate(name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, name := range sortedKeys(c.Proxies) {
		p := c.Proxies[name]
		u, err := url.Parse(p.URL)
		if !jobs.ValidName(name) || name == catalog.ProxyNone {
			errs = append(errs, fmt.Errorf("proxies: name %q must be 1-128 chars of [A-Za-z0-9_-], and not %q", name, catalog.ProxyNone))
		}
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			errs = append(errs, fmt.Errorf("proxies.%s.url %q must be http://host:port or https://host:port, without credentials (use username and password)", name, p.URL))
		}
		if (p.Username == "") != (p.Password == "") {
			errs = append(errs, fmt.Errorf("proxies.%s: give both username and password (a secret reference), or neither", name))
		}
	}
	if p := c.Worker.Proxy; p != "" && p != catalog.ProxyNone {
		if _, ok := c.Proxies[p]; !ok {
			errs = append(errs, fmt.Errorf("worker.proxy %q is not a key of proxies", p))
		}
	}
	for _, name := range sortedKeys(c.Connections) {
		if p := c.Connections[name].Proxy; p != "" && p != catalog.ProxyNone {
			if _, ok := c.Proxies[p]; !ok {
				errs = append(errs, fmt.Errorf("connection %s: proxy %q is not a key of proxies (or \"none\")", name, p))
			}
		}
	}
	for _, name := range sortedKeys(c.Tenants) {
		if !jobs.ValidName(name) {
			errs = append(errs, fmt.Errorf("tenants: name %q must be 1-128 chars of [A-Za-z0-9_-]: it is a subject token and part of a stream name", name))
		}
		if c.Tenants[name].BodiesMaxBytes < 0 {
			errs = append(errs, fmt.Errorf("tenants.%s.bodies_max_bytes must not be negative (0: no bound but the account's)", name))
		}
		if len(c.Tenants[name].Connections) == 0 {
			errs = append(errs, fmt.Errorf("tenants.%s.connections is empty; list the connections the tenant may call, or [\"*\"] for all", name))
		}
		for _, conn := range c.Tenants[name].Connections {
			if conn != "*" && !jobs.ValidName(conn) {
				errs = append(errs, fmt.Errorf("tenants.%s.connections: %q is not a connection name or \"*\"", name, conn))
			}
		}
	}
	if c.NATS.Partitions < 0 || c.NATS.Partitions > 64 {
		errs = append(errs, fmt.Errorf("nats.partitions %d must be from 0 to 64", c.NATS.Partitions))
	}
	if c.NATS.Partitions > 1 && len(c.Tenants) > 0 {
		errs = append(errs, fmt.Errorf("nats.partitions applies to a relay without tenants: each tenant's calls have a stream of their own already"))
	}
	for _, z := range c.Worker.Zones {
		if !jobs.ValidZone(z) {
			errs = append(errs, fmt.Errorf("worker.zones: zone %q must be 1-64 chars of [A-Za-z0-9-]", z))
		}
	}
	for _, p := range c.Worker.ReplyPrefixes {
		if err := jobs.CheckReplyPrefix(p); err != nil {
			errs = append(errs, fmt.Errorf("worker.reply_prefixes: %w", err))
		}
	}
	if c.Worker.Concurrency > 100000 {
		errs = append(errs, fmt.Errorf("worker.concurrency %d is more than 100000", c.Worker.Concurrency))
	}
	if c.Worker.GCPercent < 0 {
		errs = append(errs, fmt.Errorf("worker.gc_percent %d: give a positive percentage, or 0 for the default (set GOGC=off to turn the collector off)", c.Worker.GCPercent))
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// zones is Zones, or [default] when unset (read before defaults apply).
func (w WorkerConfig) zones() []string {
	if len(w.Zones) == 0 {
		return []string{jobs.DefaultZone}
	}
	return w.Zones
}

// directConcurrency is DirectConcurrency, or Concurrency when unset (read
// late, so that serve --concurrency sets both).
func (w WorkerConfig) directConcurrency() int {
	if w.DirectConcurrency > 0 {
		return w.DirectConcurrency
	}
	return w.Concurrency
}
