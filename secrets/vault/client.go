package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Client is a logged-in connection to Vault and the Sources of the vault:
// and vault-pki: references it serves. It keeps its token alive: renewed
// with api.LifetimeWatcher while renewable, and replaced by a new login
// when renewal ends (a non-renewable token, or its max TTL reached), when
// Vault no longer accepts it, or after Vault was unreachable for longer
// than its TTL. It is safe for concurrent use.
type Client struct {
	cfg     Config
	sources *secrets.Sources
	log     zerolog.Logger
	// api carries the current token and makes every read and issue.
	api *api.Client
	// anon carries no token: logins are made with it.
	anon *api.Client
	// cert serves method cert's client certificate; certTransport is the
	// transport that presents it. Both nil for other methods.
	cert          *secrets.ClientCertificate
	certTransport *http.Transport
	addr          string
	// envToken is VAULT_TOKEN as the API client read it, for method token
	// without vault.auth.token.
	envToken string

	kv  *kvSource
	pki *pkiSource

	// loginMu serializes logins. auth is the current login (its token is
	// in api), nil before the first one succeeds or after it ended; it is
	// read without waiting for a login under way.
	loginMu   sync.Mutex
	auth      atomic.Pointer[api.Secret]
	lastLogin atomic.Int64 // unix nanoseconds
	// changed wakes the maintainer when another goroutine logged in.
	changed chan struct{}

	closed atomic.Bool
	stop   context.CancelFunc
	done   chan struct{}
}

// New connects to Vault as cfg says, logs in, and starts keeping the token
// alive until Close. References in cfg.Auth (token, role_id, secret_id) are
// read through sources, so env: and file: work there.
//
// A configuration error or a login Vault refuses (bad credentials) is
// returned. When Vault cannot be reached, New still returns a Client: it
// logs a warning and keeps trying to log in, vault: references fail with a
// retryable secret_unavailable meanwhile, and the worker serves the
// profiles that do not need Vault.
func New(ctx context.Context, cfg Config, sources *secrets.Sources, log zerolog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if sources == nil {
		sources = secrets.DefaultSources("")
	}
	c := &Client{cfg: cfg, sources: sources, log: log.With().Str("component", "vault").Logger(), changed: make(chan struct{}, 1)}
	if cfg.Auth.Method == AuthCert {
		if err := c.loadClientCertificate(ctx); err != nil {
			return nil, err
		}
	}
	var err error
	if c.api, err = c.newAPIClient(); err != nil {
		return nil, err
	}
	if c.anon, err = c.newAPIClient(); err != nil {
		return nil, err
	}
	c.envToken = c.anon.Token()
	c.anon.ClearToken()
	c.api.ClearToken()
	c.addr = c.api.Address()
	c.kv = &kvSource{c: c, m: map[kvKey]*kvEntry{}}
	c.pki = &pkiSource{c: c, m: map[string]*pkiEntry{}}

	if err := c.login(ctx, nil); err != nil {
		if je := jobs.AsError(err); !je.Retryable {
			return nil, err
		}
		c.log.Warn().Err(err).Msg("cannot log in to Vault yet; retrying in the background, vault: secrets are unavailable meanwhile")
	}
	mctx, cancel := context.WithCancel(context.Background())
	c.stop, c.done = cancel, make(chan struct{})
	go c.maintain(mctx)
	return c, nil
}

// newAPIClient makes an API client from api.DefaultConfig() (VAULT_*
// variables) and the fields of cfg that are set.
func (c *Client) newAPIClient() (*api.Client, error) {
	ac := api.DefaultConfig()
	if ac.Error != nil {
		return nil, jobs.Wrap(ac.Error, jobs.CodeKeystoreInvalid, "the VAULT_* environment variables are invalid: %v", ac.Error)
	}
	if c.cfg.Address != "" {
		ac.Address = c.cfg.Address
	}
	if c.cfg.Timeout > 0 {
		ac.Timeout = c.cfg.Timeout
	}
	// Calls are retried by the relay itself, with backoff through
	// JetStream; retries inside one fetch would only hold the call up.
	if _, set := os.LookupEnv(api.EnvVaultMaxRetries); !set {
		ac.MaxRetries = 0
	}
	ac.CloneHeaders = true
	if c.cfg.CACert != "" {
		if err := ac.ConfigureTLS(&api.TLSConfig{CACert: c.cfg.CACert}); err != nil {
			return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid,
				"cannot load vault.ca_cert %q; check that it exists and holds PEM certificates", c.cfg.CACert)
		}
	}
	// The transport must protect the token: no VAULT_SKIP_VERIFY, and no
	// plain http beyond this host.
	insecure := false
	if tr, ok := ac.HttpClient.Transport.(*http.Transport); ok && tr.TLSClientConfig != nil {
		insecure = tr.TLSClientConfig.InsecureSkipVerify
	}
	if err := checkSkipVerify(os.Getenv(api.EnvVaultInsecure), insecure); err != nil {
		return nil, err
	}
	key, addr := "vault.address", ac.Address
	switch {
	case ac.AgentAddress != "":
		key, addr = api.EnvVaultAgentAddr, ac.AgentAddress
	case c.cfg.Address == "":
		key = api.EnvVaultAddress
	}
	if err := checkAddress(key, addr); err != nil {
		return nil, err
	}
	if c.cert != nil {
		// Read through the resolver on each new connection, so a pair
		// rotated on disk is presented at the next login.
		tr, ok := ac.HttpClient.Transport.(*http.Transport)
		if !ok || tr.TLSClientConfig == nil {
			return nil, jobs.Errorf(jobs.CodeInternal, "the Vault API client's transport is %T, not an *http.Transport", ac.HttpClient.Transport)
		}
		tr.TLSClientConfig.GetClientCertificate = c.cert.Get
		c.certTransport = tr
	}
	cl, err := api.NewClient(ac)
	if err != nil {
		return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid, "cannot make a Vault client for %q; check vault.address", ac.Address)
	}
	if c.cfg.Namespace != "" {
		cl.SetNamespace(c.cfg.Namespace)
	}
	return cl, nil
}

// certName names the client certificate of method cert in messages.
const certName = "vault.auth client_cert"

// loadClientCertificate sets up the client certificate of method cert:
// client_cert and client_key (one file or two) served through a
// secrets.ClientCertificate, and read once now so a missing file or a
// wrong pair fails at start.
func (c *Client) loadClientCertificate(ctx context.Context) error {
	a := c.cfg.Auth
	p := secrets.Profile{Keystore: "file:" + a.ClientCert}
	if a.ClientKey != a.ClientCert {
		p.Key = "file:" + a.ClientKey
	}
	timeout := c.cfg.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	c.cert = secrets.NewClientCertificate(c.sources, certName, p, timeout)
	if _, err := c.cert.Get(nil); err != nil {
		je := jobs.AsError(err)
		return jobs.Wrap(err, je.Code, "vault.auth.client_cert %q and client_key %q: %s", a.ClientCert, a.ClientKey, je.Message).WithRetryable(false)
	}
	c.cert.Changed(ctx)
	return nil
}

// Register makes sources fetch vault: references (KV v2) and vault-pki:
// references (PKI certificates) through this client.
func (c *Client) Register(s *secrets.Sources) {
	s.Register(secrets.SchemeVault, c.kv)
	s.Register(secrets.SchemeVaultPKI, c.pki)
}

// Address returns the Vault address in use.
func (c *Client) Address() string { return c.addr }

// Close stops renewing the token and revokes it when this client logged in
// for it (not a token given by vault.auth.token). PKI private keys held in
// memory are dropped. Sources registered from c fail afterwards.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.stop()
	<-c.done
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	if c.auth.Swap(nil) != nil && c.cfg.Auth.Method != AuthToken {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := c.api.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
			c.log.Debug().Err(classify(err, c.addr, op{doing: "revoking its token", path: "auth/token/revoke-self", capability: "update"})).Msg("could not revoke the Vault token; it expires by its TTL")
		}
	}
	c.api.ClearToken()
	c.pki.clear()
	return nil
}

// current returns the login in use, or nil.
func (c *Client) current() *api.Secret {
	return c.auth.Load()
}

// login logs in unless someone else did since stale was current: callers
// pass the login they found wanting (nil when there was none), so a burst
// of callers makes one login.
func (c *Client) login(ctx context.Context, stale *api.Secret) error {
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	if c.auth.Load() != stale {
		return nil
	}
	if ctx.Err() != nil {
		return jobs.Wrap(ctx.Err(), jobs.CodeSecretUnavailable, "gave up logging in to Vault at %s: %v", c.addr, ctx.Err())
	}
	s, err := c.authenticate(ctx)
	if err != nil {
		return err
	}
	// The token first: whoever sees the new login uses its token.
	c.api.SetToken(s.Auth.ClientToken)
	c.auth.Store(s)
	c.lastLogin.Store(time.Now().UnixNano())
	c.log.Info().Str("method", c.cfg.Auth.Method).Int("ttl_s", s.Auth.LeaseDuration).
		Bool("renewable", s.Auth.Renewable).Strs("policies", s.Auth.Policies).Msg("logged in to Vault")
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return nil
}

// forget drops the login s once its renewal ended, so the next use logs in.
func (c *Client) forget(s *api.Secret) {
	c.auth.CompareAndSwap(s, nil)
}

// session returns the current login, logging in first when there is none.
func (c *Client) session(ctx context.Context) (*api.Secret, error) {
	if c.closed.Load() {
		return nil, jobs.Errorf(jobs.CodeSecretUnavailable, "the Vault client for %s is closed (the worker is stopping)", c.addr)
	}
	if s := c.current(); s != nil {
		return s, nil
	}
	if err := c.login(ctx, nil); err != nil {
		return nil, err
	}
	if s := c.current(); s != nil {
		return s, nil
	}
	return nil, jobs.Errorf(jobs.CodeSecretUnavailable, "not logged in to Vault at %s yet; retrying", c.addr)
}

// do runs a request with the current token. When Vault answers 403 and no
// longer accepts the token itself (it expired while Vault was unreachable,
// or Vault lost it), it logs in again and retries once; a 403 with a valid
// token is the policy's answer and is returned. Errors are classified.
func (c *Client) do(ctx context.Context, o op, fn func(*api.Client) (*api.Secret, error)) (*api.Secret, error) {
	s, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	out, err := fn(c.api)
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == 403 && c.tokenRejected(ctx, s) {
		c.log.Info().Msg("Vault no longer accepts the token; logging in again")
		if lerr := c.login(ctx, s); lerr != nil {
			return nil, lerr
		}
		out, err = fn(c.api)
	}
	if err != nil {
		return nil, classify(err, c.addr, o)
	}
	return out, nil
}

// tokenRejected reports whether Vault refuses the token of s itself.
func (c *Client) tokenRejected(ctx context.Context, s *api.Secret) bool {
	cl, err := c.anon.Clone()
	if err != nil {
		return false
	}
	cl.SetToken(s.Auth.ClientToken)
	_, err = cl.Auth().Token().LookupSelfWithContext(ctx)
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

// maintain keeps a login alive until ctx ends: it renews the token, logs in
// again when renewal ends, and retries failed logins with backoff.
func (c *Client) maintain(ctx context.Context) {
	defer close(c.done)
	backoff := time.Second
	for ctx.Err() == nil {
		s := c.current()
		if s == nil {
			err := c.login(ctx, nil)
			if err == nil {
				continue
			}
			if ctx.Err() != nil {
				return
			}
			c.log.Warn().Err(err).Dur("retry_in", backoff).Msg("Vault login failed; profiles already loaded keep working")
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		if !c.watch(ctx, s) {
			continue
		}
		c.forget(s)
		// A token whose renewal ends at once (one close to its expiry,
		// handed out again by a token file) must not make a login loop.
		if since := time.Since(time.Unix(0, c.lastLogin.Load())); since < 2*time.Second {
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 30*time.Second)
		} else {
			backoff = time.Second
		}
	}
}

// watch renews the token of s until renewal ends, another goroutine logs
// in, or ctx ends; it reports whether renewal ended. A token without TTL (a
// root token) is just kept.
func (c *Client) watch(ctx context.Context, s *api.Secret) (ended bool) {
	// Without a TTL there is no watcher: its channels stay nil and never fire.
	var doneCh <-chan error
	var renewCh <-chan *api.RenewOutput
	if s.Auth.LeaseDuration > 0 {
		w, err := c.api.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: s, RenewBehavior: api.RenewBehaviorIgnoreErrors})
		if err != nil {
			c.log.Error().Str("error_type", fmt.Sprintf("%T", err)).Msg("cannot watch the Vault token's lifetime; logging in again")
			return true
		}
		go w.Start()
		defer w.Stop()
		doneCh, renewCh = w.DoneCh(), w.RenewCh()
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-c.changed:
			if c.current() != s {
				return false
			}
		case err := <-doneCh:
			ev := c.log.Info()
			if err != nil {
				ev = c.log.Warn().Err(classify(err, c.addr, op{doing: "renewing its token", path: "auth/token/renew-self", capability: "update"}))
			}
			ev.Msg("Vault token renewal ended (max TTL reached or not renewable); logging in again")
			return true
		case r := <-renewCh:
			ttl := 0
			if r.Secret != nil && r.Secret.Auth != nil {
				ttl = r.Secret.Auth.LeaseDuration
			}
			c.log.Debug().Int("ttl_s", ttl).Msg("renewed the Vault token")
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
