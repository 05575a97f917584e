package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/client"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// Names the rig gives the profile and connection the workers use.
const (
	benchProfile    = "bench"
	benchConnection = "bench"
)

// rig is everything a run starts in-process: an embedded NATS server, a
// partner demanding a client certificate, the workers, the flow's NATS
// connection and the direct HTTP client.
type rig struct {
	o      Options
	dir    string
	ownDir bool

	ns      *server.Server
	natsPro *childProc   // the NATS server's process (neither embedded nor Options.NATSURL)
	url     string       // the NATS server's: the process's, the in-process one's or Options.NATSURL
	partner benchPartner // in-process, or a partnerProc
	workers []*runningWorker
	procs   []*workerProc // worker processes, instead of workers
	flowNC  *nats.Conn
	results *nats.Subscription
	floor   *floorResponder

	direct *directCaller
	relay  *relayCaller

	// The peer phase: Benthos's process and the flow's side of it.
	benthos *childProc
	peer    *peerCaller
	// PEM files of the partner's CA and of the client certificate and key
	// (the profile's keystore, for Benthos).
	caFile, clientCertFile, clientKeyFile string
}

type runningWorker struct {
	w      *worker.Worker
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

// startRig starts the rig; on failure it stops what it started.
func startRig(ctx context.Context, o Options, progress func(string, ...any)) (r *rig, err error) {
	r = &rig{o: o, dir: o.Dir}
	defer func() {
		if err != nil {
			r.close()
			r = nil
		}
	}()
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "mtlsrelay-bench-"); err != nil {
			return r, err
		}
		r.ownDir = true
	}
	if o.NATSURL != "" {
		if err := checkExternalNATS(ctx, o.NATSURL); err != nil {
			return r, err
		}
		r.url = o.NATSURL
	} else if !o.EmbeddedNATS {
		bin, err := NATSServerTool().Build(progress)
		if err != nil {
			return r, fmt.Errorf("the NATS server runs as a process of its own (--embedded-nats runs it in the bench's): %w", err)
		}
		if r.natsPro, r.url, err = startNATSProcess(ctx, bin, filepath.Join(r.dir, "nats")); err != nil {
			return r, err
		}
	} else {
		withPart(partNATS, func() {
			r.ns, err = embedded.Start(embedded.Options{Listen: "127.0.0.1:0", StoreDir: filepath.Join(r.dir, "nats"), ServerName: "mtlsrelay-bench"})
		})
		if err != nil {
			return r, err
		}
		r.url = r.ns.ClientURL()
	}

	profile, err := r.writePKI(o)
	if err != nil {
		return r, err
	}
	if o.workerProcesses() {
		for i := range o.Workers {
			name := fmt.Sprintf("bench-worker-%d", i+1)
			cfg := r.workerConfig(name, &profile)
			if _, err := worker.ParseConfig([]byte(cfg)); err != nil {
				return r, fmt.Errorf("bench worker config: %w", err)
			}
			if err := r.startWorkerProcess(ctx, name, cfg, i); err != nil {
				return r, err
			}
		}
	} else {
		for i := range o.Workers {
			cfg, err := worker.ParseConfig([]byte(r.workerConfig(fmt.Sprintf("bench-worker-%d", i+1), nil)))
			if err != nil {
				return r, fmt.Errorf("bench worker config: %w", err)
			}
			cfg.Profiles = map[string]secrets.Profile{benchProfile: profile}
			withPart(partWorker, func() { err = r.startWorker(cfg) })
			if err != nil {
				return r, err
			}
		}
		if err := r.waitReady(ctx); err != nil {
			return r, err
		}
	}

	withPart(partFlow, func() { err = r.connectFlow(o) })
	if err != nil {
		return r, err
	}
	// Calls in flight bound what can be pending; never drop a result.
	if err := r.results.SetPendingLimits(-1, -1); err != nil {
		return r, err
	}

	// The direct client presents the same profile, resolved by the same
	// code, with its own session cache, as a second worker would.
	mat, err := secrets.NewResolver(secrets.DefaultSources(r.dir)).Resolve(ctx, benchProfile, profile)
	if err != nil {
		return r, fmt.Errorf("resolve the bench profile for the direct client: %w", err)
	}
	r.direct = newDirectCaller(r.partner.URL(), mat, o)
	return r, nil
}

// workerConfig is the YAML config of the worker name. Every worker may
// take all the calls in flight: the bench's concurrency, not the workers',
// bounds the load. A worker process (profile set) finds the NATS server and
// the profile in it; an in-process worker gets the profile from the rig.
func (r *rig) workerConfig(name string, profile *secrets.Profile) string {
	o := r.o
	var b strings.Builder
	fmt.Fprintf(&b, "worker: {name: %q, concurrency: %d, admin_addr: \"off\", shutdown_grace: 5s}\n", name, o.inflight())
	limit := ""
	if o.LargeBodies {
		// The bodies stream to the Object Store; this is only the bound.
		limit = fmt.Sprintf(", max_response_bytes: %d", catalog.MaxResponseBytesLimit)
	}
	fmt.Fprintf(&b, "connections:\n  %s: {base_url: %q, profile: %s, timeout: %s, max_attempts: 1%s}\n",
		benchConnection, r.partner.URL()+"/", benchProfile, o.CallTimeout, limit)
	if profile != nil {
		fmt.Fprintf(&b, "nats: {url: %q}\n", r.url)
		fmt.Fprintf(&b, "profiles:\n  %s: {keystore: %q, password: %q, truststore: %q}\n",
			benchProfile, profile.Keystore, profile.Password, profile.Truststore)
	}
	return b.String()
}

// connectFlow connects the flow to NATS and subscribes to its results.
func (r *rig) connectFlow(o Options) error {
	var err error
	if r.flowNC, err = nats.Connect(r.url, nats.Name("mtlsrelay bench flow")); err != nil {
		return fmt.Errorf("connect the bench flow to NATS: %w", err)
	}
	client, err := client.New(r.flowNC)
	if err != nil {
		return err
	}
	runID := hex.EncodeToString(randomBytes(4))
	r.relay = newRelayCaller(client, o, runID)
	if r.results, err = r.flowNC.Subscribe(r.relay.replyPrefix+">", r.relay.deliver); err != nil {
		return fmt.Errorf("subscribe to results: %w", err)
	}
	return nil
}

// writePKI makes a CA, the partner's server certificate and a client
// keystore, starts the partner, and returns the profile naming the
// keystore and truststore files.
func (r *rig) writePKI(o Options) (secrets.Profile, error) {
	ca, err := pki.NewCA("mtlsrelay bench CA")
	if err != nil {
		return secrets.Profile{}, err
	}
	srvLeaf, err := ca.Issue(pki.LeafOptions{CommonName: "localhost", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		return secrets.Profile{}, err
	}
	client, err := ca.Issue(pki.LeafOptions{CommonName: "mtlsrelay-bench-client", Client: true})
	if err != nil {
		return secrets.Profile{}, err
	}
	password := hex.EncodeToString(randomBytes(16))
	p12, err := client.PKCS12(password)
	if err != nil {
		return secrets.Profile{}, err
	}
	keystore, truststore := filepath.Join(r.dir, "client.p12"), filepath.Join(r.dir, "ca.pem")
	if err := os.WriteFile(keystore, p12, 0o600); err != nil {
		return secrets.Profile{}, err
	}
	if err := os.WriteFile(truststore, ca.CertPEM(), 0o644); err != nil {
		return secrets.Profile{}, err
	}
	// The same certificate as PEM files, for Benthos (the peer phase).
	r.caFile, r.clientCertFile, r.clientKeyFile = truststore, filepath.Join(r.dir, "client-cert.pem"), filepath.Join(r.dir, "client-key.pem")
	if err := os.WriteFile(r.clientCertFile, client.CertPEM(), 0o644); err != nil {
		return secrets.Profile{}, err
	}
	if err := os.WriteFile(r.clientKeyFile, client.KeyPEM(), 0o600); err != nil {
		return secrets.Profile{}, err
	}
	if o.partnerProcess() {
		srvFile := filepath.Join(r.dir, "partner.pem")
		if err := os.WriteFile(srvFile, srvLeaf.PEM(), 0o600); err != nil {
			return secrets.Profile{}, err
		}
		p, err := r.startPartnerProcess(srvFile, truststore)
		if err != nil {
			return secrets.Profile{}, err
		}
		r.partner = p
	} else {
		var p *partner.Server
		withPart(partPartner, func() {
			p, err = partner.Start(partner.Options{Certificate: srvLeaf.TLSCertificate(), ClientCAs: ca.Pool(), DisableHTTP2: o.HTTP1})
		})
		if err != nil {
			return secrets.Profile{}, err
		}
		r.partner = p
	}
	return secrets.Profile{
		Keystore:   "file:" + keystore,
		Password:   "value:" + password,
		Truststore: "file:" + truststore,
	}, nil
}

func (r *rig) startWorker(cfg *worker.Config) error {
	nc, err := nats.Connect(r.url, nats.Name("mtlsrelay bench "+cfg.Worker.Name))
	if err != nil {
		return fmt.Errorf("connect %s to NATS: %w", cfg.Worker.Name, err)
	}
	w, err := worker.New(cfg, nc, worker.WithLogger(zerolog.Nop()))
	if err != nil {
		nc.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{w: w, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	r.workers = append(r.workers, rw)
	return nil
}

// waitReady waits until every worker consumes, or one of them fails.
func (r *rig) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		ready := 0
		for _, rw := range r.workers {
			select {
			case err := <-rw.done:
				rw.done <- err
				return fmt.Errorf("worker %s stopped while starting: %v", rw.w.Name(), err)
			default:
			}
			if rw.w.Ready() {
				ready++
			}
		}
		if ready == len(r.workers) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d workers were ready after 30s", ready, len(r.workers))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// protocol makes one direct request to learn the negotiated HTTP version.
// Its connection is the direct client's.
func (r *rig) protocol(ctx context.Context) (proto string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.partner.URL()+"/bytes?n=0", nil)
	if err != nil {
		return "", err
	}
	var resp *http.Response
	withPart(partDirect, func() { resp, err = r.direct.client.Do(req) })
	if err != nil {
		return "", fmt.Errorf("probe the partner directly: %w", err)
	}
	resp.Body.Close()
	return resp.Proto, nil
}

// startFloor stops the workers and starts a floorResponder on their
// consumer in their place.
func (r *rig) startFloor(ctx context.Context) (err error) {
	r.stopWorkers()
	for _, p := range r.procs {
		p.stop()
	}
	withPart(partWorker, func() { r.floor, err = startFloor(ctx, r.url, r.o) })
	return err
}

// stopWorkers stops the workers, each within its shutdown grace.
func (r *rig) stopWorkers() {
	for _, rw := range r.workers {
		rw.cancel()
	}
	for _, rw := range r.workers {
		select {
		case <-rw.done:
		case <-time.After(15 * time.Second):
		}
		rw.nc.Close()
	}
	r.workers = nil
}

// close stops everything the rig started, in reverse order.
func (r *rig) close() {
	if r.results != nil {
		_ = r.results.Unsubscribe()
	}
	if r.peer != nil {
		_ = r.peer.sub.Unsubscribe()
	}
	if r.benthos != nil {
		r.benthos.stop()
	}
	if r.flowNC != nil {
		r.flowNC.Close()
	}
	if r.floor != nil {
		r.floor.close()
	}
	r.stopWorkers()
	for _, p := range r.procs {
		p.stop()
	}
	if r.direct != nil {
		r.direct.transport.CloseIdleConnections()
	}
	if r.partner != nil {
		_ = r.partner.Close()
	}
	switch {
	case r.ns != nil:
		r.ns.Shutdown()
		r.ns.WaitForShutdown()
	case r.natsPro != nil:
		r.natsPro.stop()
	case r.url != "":
		removeBenchStreams(r.url)
	}
	if r.ownDir && r.dir != "" {
		_ = os.RemoveAll(r.dir)
	}
}

// natsInProcess is Setup.NATS for a run on the in-process server;
// natsProcess for one on the server the run started as a process.
const (
	natsInProcess = "in-process"
	natsProcess   = "process"
)

// benchProcess says what runs in the bench process.
func (r *rig) benchProcess() string {
	s := "load generator (direct client or flow)"
	if _, ok := r.partner.(*partnerProc); !ok {
		s = "partner, " + s
	}
	if r.ns != nil {
		s += ", embedded NATS server"
	}
	if len(r.procs) == 0 {
		s += ", workers"
	}
	return s
}

// meter is what the phases' windows measure: the partner's counters and
// the CPU of the run's other processes (workers, NATS server, Benthos).
func (r *rig) meter() meter {
	m := meter{partner: r.partner}
	for i, p := range r.procs {
		select {
		case <-p.exited: // stopped for the queue floor
			continue
		default:
		}
		name := "worker"
		if len(r.procs) > 1 {
			name = fmt.Sprintf("worker-%d", i+1)
		}
		m.procs = append(m.procs, procRef{name: name, includes: "the worker (worker.New + Run), nothing else", pid: p.cmd.Process.Pid})
	}
	if p, ok := r.partner.(*partnerProc); ok {
		m.procs = append(m.procs, procRef{name: processPartner, includes: "the partner (internal/partner): TLS server, HTTP/2, /bytes", pid: p.pid()})
	}
	if r.natsPro != nil {
		m.procs = append(m.procs, procRef{name: processNATS, includes: "nats-server " + NATSServerVersion + ", JetStream on file storage", pid: r.natsPro.pid()})
	}
	if r.benthos != nil {
		m.procs = append(m.procs, procRef{name: processBenthos, includes: "Benthos " + BenthosVersion + ": nats_jetstream input, http processor, nats_jetstream output", pid: r.benthos.pid()})
	}
	return m
}

// natsName says which NATS server the run used, for the report: the
// external server's URL without its credentials.
func (r *rig) natsName() string {
	if r.ns != nil {
		return natsInProcess
	}
	if r.natsPro != nil {
		return natsProcess
	}
	u, err := url.Parse(r.url)
	if err != nil || u.Host == "" {
		return "external"
	}
	return u.Scheme + "://" + u.Host + " (external)"
}

// benchStreams are the streams a run creates on the NATS server: the three
// of SPEC.md, the workers' call-state bucket and their bodies bucket.
var benchStreams = []string{jobs.StreamCalls, jobs.StreamZones, jobs.StreamResults, jobs.StreamDead, "KV_" + worker.StateBucket, "OBJ_" + jobs.BucketBodies, peerCallsStream, peerResultsStream}

// checkExternalNATS makes sure the server at url is one the run may use: it
// answers, has JetStream, and holds none of the streams a run creates and
// deletes (a worker's streams there would be the relay's, not the bench's).
func checkExternalNATS(ctx context.Context, u string) error {
	nc, err := nats.Connect(u, nats.Name("mtlsrelay bench check"))
	if err != nil {
		return fmt.Errorf("connect to the NATS server %s: %w", u, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("NATS server %s: JetStream is needed: %w", u, err)
	}
	for _, name := range benchStreams {
		_, err := js.Stream(ctx, name)
		switch {
		case err == nil:
			return fmt.Errorf("NATS server %s already holds stream %s: the bench creates and deletes mtlsrelay's streams, so it needs a NATS server of its own (remove the stream if an earlier run left it)", u, name)
		case !errors.Is(err, jetstream.ErrStreamNotFound):
			return fmt.Errorf("NATS server %s: look up stream %s: %w", u, name, err)
		}
	}
	return nil
}

// removeBenchStreams deletes the streams the run created on an external
// server; a stream that is already gone is fine.
func removeBenchStreams(u string) {
	nc, err := nats.Connect(u, nats.Name("mtlsrelay bench cleanup"))
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range benchStreams {
		_ = js.DeleteStream(ctx, name)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// requestShape is the one request both paths make.
type requestShape struct {
	method  string
	path    string // relative to the partner's base URL, without query
	query   map[string][]string
	body    []byte
	wantLen int // expected response body length; -1 when unknown
}

func shapeOf(o Options) requestShape {
	s := requestShape{method: http.MethodGet, wantLen: -1}
	if o.LargeBodies {
		// The partner's pattern: each body has a known SHA-256.
		n := o.largeBodyBytes()
		s.path = "bytes"
		s.query = map[string][]string{"n": {strconv.FormatInt(n, 10)}, "pattern": {"1"}}
		s.wantLen = int(n)
		return s
	}
	if o.BodyBytes > 0 {
		s.method = http.MethodPost
		s.body = []byte(strings.Repeat("0123456789abcdef", o.BodyBytes/16+1)[:o.BodyBytes])
	}
	switch o.Route {
	case RouteEcho:
		s.path = "echo"
	default:
		s.path = "bytes"
		s.query = map[string][]string{"n": {strconv.Itoa(o.ResponseBytes)}}
		s.wantLen = o.ResponseBytes
	}
	return s
}

// errBadResponse reports a response that is not the expected 200.
var errBadResponse = errors.New("unexpected response")
