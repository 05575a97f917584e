// Package demo runs the whole mtlsrelay loop on one machine: an embedded
// NATS server, a local partner that demands a client certificate (REST and
// SOAP), a generated CA and PKCS#12 keystore, a worker, and a few calls,
// one of which fails on purpose. `mtlsrelay demo` prints its table.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/client"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// Options configures a demo run.
type Options struct {
	// Out receives the narration and the results table.
	Out io.Writer
	// Log receives the worker's log; default: discarded.
	Log zerolog.Logger
	// Dir holds the generated files and JetStream data; default a temporary
	// folder removed at the end.
	Dir string
}

// Step is one call of the demo and what it should show.
type Step struct {
	Title  string
	Direct bool
	Call   jobs.Call
}

// Steps are the calls the demo makes, the last one failing on purpose.
func Steps() []Step {
	return []Step{
		{Title: "REST GET", Call: jobs.Call{Connection: "partner-api", Path: "echo", Query: map[string][]string{"order": {"42"}}}},
		{Title: "REST POST JSON", Call: jobs.Call{Connection: "partner-api", Method: "POST", Path: "echo",
			Headers: map[string][]string{"Content-Type": {"application/json"}}, Body: `{"amount":12.5}`}},
		{Title: "REST 404 (a result)", Call: jobs.Call{Connection: "partner-api", Path: "status/404"}},
		{Title: "SOAP 1.1", Call: jobs.Call{Connection: "partner-api", Path: "soap",
			SOAP: &jobs.SOAP{Version: "1.1", Action: "urn:GetQuote", Body: `<q:GetQuote xmlns:q="urn:quotes"><q:Symbol>ACME</q:Symbol></q:GetQuote>`}}},
		{Title: "SOAP 1.2 fault", Call: jobs.Call{Connection: "partner-api", Path: "soap",
			SOAP: &jobs.SOAP{Version: "1.2", Action: "urn:Fail", Body: `<q:Fail xmlns:q="urn:quotes"/>`}}},
		{Title: "REST direct (rpc)", Direct: true, Call: jobs.Call{Connection: "partner-api", Path: "echo"}},
		{Title: "fails on purpose", Call: jobs.Call{Connection: "partner-api", URL: "https://not-allowed.example/steal"}},
	}
}

// Run performs the demo and writes its table to o.Out. It returns the
// results in the order of Steps.
func Run(ctx context.Context, o Options) ([]*jobs.Result, error) {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "mtlsrelay-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	srv, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return nil, err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	say("1. embedded NATS with JetStream at %s", srv.ClientURL())

	ca, err := pki.NewCA("mtlsrelay demo CA")
	if err != nil {
		return nil, err
	}
	serverLeaf, err := ca.Issue(pki.LeafOptions{CommonName: "localhost", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		return nil, err
	}
	clientLeaf, err := ca.Issue(pki.LeafOptions{CommonName: "demo-flow-client", Organization: "mtlsrelay demo", Client: true})
	if err != nil {
		return nil, err
	}
	password := randomPassword()
	p12, err := clientLeaf.PKCS12(password)
	if err != nil {
		return nil, err
	}
	keystore, truststore := filepath.Join(dir, "client.p12"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(keystore, p12, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(truststore, ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	say("2. generated a CA, a server certificate and a client keystore %s (PKCS#12, CN=demo-flow-client, serial %s)", keystore, clientLeaf.SerialHex())

	p, err := partner.Start(partner.Options{Certificate: serverLeaf.TLSCertificate(), ClientCAs: ca.Pool()})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	say("3. partner at %s demands a client certificate (REST /echo, /status, SOAP /soap)", p.URL())

	const passwordEnv = "MTLSRELAY_DEMO_KEYSTORE_PASSWORD"
	if err := os.Setenv(passwordEnv, password); err != nil {
		return nil, err
	}
	defer os.Unsetenv(passwordEnv)
	cfg, err := worker.ParseConfig([]byte(fmt.Sprintf(`
worker: {name: demo-worker, concurrency: 8, admin_addr: "off", retry_base: 100ms}
profiles:
  partner: {keystore: "file:%s", password: "env:%s", truststore: "file:%s"}
connections:
  partner-api: {base_url: "%s/", profile: partner, timeout: 10s, max_attempts: 3}
`, keystore, passwordEnv, truststore, strings.TrimSuffix(p.URL(), "/"))))
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	w, err := worker.New(cfg, nc, worker.WithLogger(o.Log))
	if err != nil {
		return nil, err
	}
	wctx, stopWorker := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stopWorker(); <-done }()
	say("4. worker %q consumes %s.calls.> and serves %s.rpc.>", w.Name(), jobs.DefaultPrefix, jobs.DefaultPrefix)

	client, err := client.New(nc)
	if err != nil {
		return nil, err
	}
	say("5. calls:\n")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALL\tVIA\tSTATUS\tOK\tRESULT\tATTEMPT\tMS")
	var results []*jobs.Result
	for i, step := range Steps() {
		c := step.Call
		c.ID = fmt.Sprintf("demo-%d-%s", i+1, hex.EncodeToString(randomBytes(4)))
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var res *jobs.Result
		via := "jetstream"
		if step.Direct {
			via = "rpc"
			res, err = client.Direct(cctx, &c)
		} else {
			res, err = client.Call(cctx, &c)
		}
		cancel()
		if err != nil {
			return results, fmt.Errorf("%s: %w", step.Title, err)
		}
		results = append(results, res)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%s\t%d\t%.1f\n", step.Title, via, res.Status, res.OK, summary(res), res.Attempt, res.Timing.TotalMS)
	}
	tw.Flush()
	if len(results) > 0 && results[0].ClientCert != nil {
		cc := results[0].ClientCert
		say("\nclient certificate presented: %s (serial %s, expires %s)", cc.Subject, cc.Serial, cc.NotAfter.Format(time.RFC3339))
	}
	say("results are kept in stream %s; try: mtlsrelay serve, then mtlsrelay call CONNECTION", jobs.StreamResults)
	return results, nil
}

func summary(r *jobs.Result) string {
	switch {
	case r.Error != nil:
		return clip(string(r.Error.Code)+": "+r.Error.Message, 90)
	case r.SOAPFault != nil:
		return "soap fault " + r.SOAPFault.Code + ": " + r.SOAPFault.Reason
	default:
		return clip(strings.Join(strings.Fields(r.Body), " "), 60)
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// randomPassword protects the generated keystore; it is handed to the
// worker through the environment, never printed.
func randomPassword() string { return hex.EncodeToString(randomBytes(16)) }
