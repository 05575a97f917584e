package integration

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/client"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// tenantWorkerConfig is the worker of a relay with tenants billing and
// shipping, as docs/nats-accounts.conf expects them.
const tenantWorkerConfig = `
nats: NATSAUTH
worker: {concurrency: CONCURRENCY, admin_addr: "off"}
tenants:
  billing:  {connections: [partner, limited, slow], bodies_max_bytes: 100000000}
  shipping: {connections: ["*"]}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER/?tenant=A", profile: p, breaker_failures: -1}
  limited: {base_url: "PARTNER", profile: p, timeout: 2s, max_attempts: 2}
  slow:    {base_url: "PARTNER", profile: p, timeout: 10s, max_attempts: 1, breaker_failures: -1}
  other:   {base_url: "PARTNER", profile: p}
`

// tenantRelay is a relay with tenants on a real NATS server that runs the
// shipped docs/nats-accounts.conf, with a real mTLS partner.
type tenantRelay struct {
	srv     *server.Server
	partner *partner.Server
	// admin is the registry administrator's connection (full access).
	admin   *nats.Conn
	adminJS jetstream.JetStream
	// dead collects every dead letter, by call id header.
	mu   sync.Mutex
	dead map[string][]*nats.Msg
}

func startTenantRelay(t *testing.T, concurrency int) *tenantRelay {
	return startTenantRelayWith(t, concurrency, false)
}

// startTenantRelayWith starts the relay with its worker in process, or, with
// binary, as the real `mtlsrelay serve` reading a config file (which also
// watches the registry).
func startTenantRelayWith(t *testing.T, concurrency int, binary bool) *tenantRelay {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	opts, err := server.ProcessConfigFile(filepath.Join(filepath.Dir(file), "..", "docs", "nats-accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// The file fsyncs every write (sync_interval: always), as a single
	// production server should; these tests check permissions and
	// isolation, not power loss, and flood the server: they run with
	// nats-server's default interval.
	if !opts.SyncAlways {
		t.Fatal("docs/nats-accounts.conf no longer sets sync_interval: always; update docs/RELIABILITY.md and this test")
	}
	opts.SyncAlways, opts.SyncInterval = false, 0
	r := &tenantRelay{srv: startServerWith(t, opts), partner: startPartner(t), dead: map[string][]*nats.Msg{}}
	r.admin, err = nats.Connect(r.srv.ClientURL(), nats.UserInfo("admin", "admin-example-password"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.admin.Close)
	r.adminJS, _ = jetstream.New(r.admin)
	ctx := context.Background()
	// The administrator creates the registry (workers may only read it),
	// with a connection a hostile reply_to would overwrite.
	kv, err := r.adminJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: jobs.RegistryBucket, History: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "connections.victim", []byte(`{"base_url":"https://victim.example/","profile":"p"}`)); err != nil {
		t.Fatal(err)
	}
	sub, err := r.admin.Subscribe("mtlsrelay.dead.>", func(m *nats.Msg) {
		r.mu.Lock()
		defer r.mu.Unlock()
		id := m.Header.Get(jobs.HeaderCallID)
		r.dead[id] = append(r.dead[id], m)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	repl := []string{"NATSAUTH", `{user: worker, password: "value:worker-example-password"}`,
		"PARTNER", r.partner.URL(), "CONCURRENCY", fmt.Sprint(concurrency)}
	if binary {
		startWorkerProcess(t, r.srv.ClientURL(), writeConfig(t, tenantWorkerConfig, repl...), "tenant-relay")
		return r
	}
	runWorkerConfig(t, r.srv.ClientURL(), configYAML(t, tenantWorkerConfig, repl...))
	return r
}

// tenant connects as tenant's user, with its own inbox prefix; violations
// collects the permission errors the server reports to it.
type tenant struct {
	name       string
	nc         *nats.Conn
	js         jetstream.JetStream
	client     *client.Client
	mu         sync.Mutex
	violations []string
}

func (r *tenantRelay) tenant(t *testing.T, name string) *tenant {
	t.Helper()
	tn := &tenant{name: name}
	var err error
	tn.nc, err = nats.Connect(r.srv.ClientURL(), nats.UserInfo(name, name+"-example-password"),
		nats.CustomInboxPrefix(jobs.TenantInbox(name)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			tn.mu.Lock()
			tn.violations = append(tn.violations, err.Error())
			tn.mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tn.nc.Close)
	tn.js, _ = jetstream.New(tn.nc)
	if tn.client, err = client.New(tn.nc, client.WithTenant(name)); err != nil {
		t.Fatal(err)
	}
	return tn
}

// violated waits for the server to report a permission violation on
// subject to the tenant.
func (tn *tenant) violated(t *testing.T, subject string) {
	t.Helper()
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		tn.mu.Lock()
		defer tn.mu.Unlock()
		for _, v := range tn.violations {
			if strings.Contains(v, "Permissions Violation") && strings.Contains(v, subject) {
				return nil
			}
		}
		return fmt.Errorf("no permissions violation on %s for %s: %v", subject, tn.name, tn.violations)
	})
}

// deadLetter waits for the dead letter of call id and returns its reason.
func (r *tenantRelay) deadLetter(t *testing.T, id string) string {
	t.Helper()
	var reason string
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.dead[id]) == 0 {
			return fmt.Errorf("no dead letter for call %s", id)
		}
		reason = r.dead[id][0].Header.Get(jobs.HeaderDeadReason)
		return nil
	})
	return reason
}

// publish sends raw call bytes to tenant's calls subject of conn.
func (tn *tenant) publish(t *testing.T, conn, msgID string, data []byte) {
	t.Helper()
	msg := nats.NewMsg(jobs.Subjects{}.TenantCalls(tn.name, conn))
	msg.Data = data
	msg.Header.Set(jobs.HeaderMsgID, msgID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := tn.js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("%s publish on %s: %v", tn.name, msg.Subject, err)
	}
}

// callAndWait sends a call of tenant to conn and returns its result, read
// on the tenant's own results subject.
func (tn *tenant) callAndWait(t *testing.T, conn string, c map[string]any) *jobs.Result {
	t.Helper()
	id := c["id"].(string)
	reply := jobs.Subjects{}.TenantResult(tn.name, id)
	if _, ok := c["reply_to"]; !ok {
		c["reply_to"] = reply
	}
	sub, err := tn.nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	data, _ := json.Marshal(c)
	tn.publish(t, conn, id, data)
	m, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no result for %s's call %s: %v", tn.name, id, err)
	}
	if got, want := m.Header.Get(jobs.HeaderMsgID), jobs.ResultMsgID(tn.name, id); got != want {
		t.Errorf("result Nats-Msg-Id = %q, want %q", got, want)
	}
	var res jobs.Result
	if err := json.Unmarshal(m.Data, &res); err != nil {
		t.Fatal(err)
	}
	return &res
}

// Every denial of the shipped accounts file, on a real server: a tenant
// publishes only its own calls and reads only its own results; the workers
// cannot write the registry; the administrator can.
func TestNATSAccountsMultiTenant(t *testing.T) {
	r := startTenantRelay(t, 4)
	billing, shipping := r.tenant(t, "billing"), r.tenant(t, "shipping")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("ok/tenant-calls-and-reads-its-own-results", func(t *testing.T) {
		id := uniqueID("billing-ok")
		res := billing.callAndWait(t, "partner", map[string]any{"id": id, "path": "echo"})
		if !res.OK {
			t.Fatalf("billing's call: %+v", res.Error)
		}
		// Stored, and readable by billing through the client.
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			stored, err := billing.client.StoredResult(ctx, jobs.Subjects{}.TenantResult("billing", id))
			if err != nil || stored.ID != id {
				return fmt.Errorf("billing reads its stored result: %v %+v", err, stored)
			}
			return nil
		})
		// The client's own subjects work end to end.
		res, err := shipping.client.Call(ctx, &jobs.Call{ID: uniqueID("shipping-client"), Connection: "other", Path: "echo"})
		if err != nil || !res.OK {
			t.Fatalf("shipping's client call: %v %+v", err, res)
		}
	})
	t.Run("ok/tenant-sends-and-reads-large-bodies-in-its-own-bucket", func(t *testing.T) {
		// Over the client's inline bound: uploaded to mtlsrelay_bodies_billing.
		body, _ := io.ReadAll(partner.Pattern(1 << 20))
		res, err := billing.client.Call(ctx, &jobs.Call{ID: uniqueID("billing-up"), Connection: "partner", Method: "POST", Path: "sha256", BodyBase64: body})
		if err != nil || !res.OK {
			t.Fatalf("billing's upload: %v %+v", err, res)
		}
		var got partner.BodyDigest
		if err := json.Unmarshal(res.ResponseBody(), &got); err != nil || got.Size != 1<<20 || got.SHA256 != partner.PatternSHA256(1<<20) {
			t.Errorf("the partner received %+v (%v)", got, err)
		}
		res, err = billing.client.Call(ctx, &jobs.Call{ID: uniqueID("billing-down"), Connection: "partner", Path: "bytes", Query: map[string][]string{"n": {"2000000"}, "pattern": {"1"}}})
		if err != nil || !res.OK || res.BodyRef == nil {
			t.Fatalf("billing's download: %v %+v", err, res)
		}
		if res.BodyRef.Bucket != "mtlsrelay_bodies_billing" || !strings.HasPrefix(res.BodyRef.Name, "billing/") {
			t.Errorf("body_ref %+v; want bucket mtlsrelay_bodies_billing, a name under billing/", res.BodyRef)
		}
		// tenants.billing.bodies_max_bytes bounds billing's bucket.
		if s, err := r.adminJS.Stream(ctx, "OBJ_mtlsrelay_bodies_billing"); err != nil || s.CachedInfo().Config.MaxBytes != 100000000 {
			t.Errorf("billing's bucket is not bounded by its bodies_max_bytes: %v", err)
		}
		h := sha256.Sum256(res.ResponseBody())
		if hex.EncodeToString(h[:]) != partner.PatternSHA256(2000000) {
			t.Errorf("billing read another body than the partner sent")
		}
		// Shipping can reach nothing of billing's bucket.
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if store, err := shipping.js.ObjectStore(short, "mtlsrelay_bodies_billing"); err == nil {
			if _, err := store.GetBytes(short, res.BodyRef.Name); err == nil {
				t.Error("shipping read billing's body")
			}
		}
		shipping.violated(t, "$JS.API.STREAM.INFO.OBJ_mtlsrelay_bodies_billing")
	})
	t.Run("fail/body-ref-linking-another-tenants-body", func(t *testing.T) {
		// Shipping's response body, in shipping's bucket.
		res, err := shipping.client.Call(ctx, &jobs.Call{ID: uniqueID("shipping-down"), Connection: "other", Path: "bytes", Query: map[string][]string{"n": {"2000000"}, "pattern": {"1"}}})
		if err != nil || !res.OK || res.BodyRef == nil {
			t.Fatalf("shipping's download: %v %+v", err, res)
		}
		// Billing may write its own bucket: it writes an object info that
		// links to shipping's object, and names it in a call.
		link := jetstream.ObjectInfo{
			ObjectMeta: jetstream.ObjectMeta{Name: "billing/link", Opts: &jetstream.ObjectMetaOptions{
				Link: &jetstream.ObjectLink{Bucket: res.BodyRef.Bucket, Name: res.BodyRef.Name}}},
			Bucket: "mtlsrelay_bodies_billing", NUID: "linknuid",
		}
		data, _ := json.Marshal(link)
		m := nats.NewMsg("$O.mtlsrelay_bodies_billing.M." + base64.URLEncoding.EncodeToString([]byte("billing/link")))
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		m.Data = data
		if _, err := billing.js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("billing writes a link in its bucket: %v", err)
		}
		before := r.partner.Requests().Routes["/sha256"]
		got := billing.callAndWait(t, "partner", map[string]any{"id": uniqueID("billing-link"), "method": "POST", "path": "sha256", "body_ref": map[string]string{"name": "billing/link"}})
		if got.Error == nil || got.Error.Code != jobs.CodeInvalidCall || !strings.Contains(got.Error.Message, "link") {
			t.Errorf("a body_ref linking to shipping's body: %+v", got.Error)
		}
		if n := r.partner.Requests().Routes["/sha256"] - before; n != 0 {
			t.Errorf("the partner received %d requests: shipping's body was sent", n)
		}
	})
	t.Run("fail/result-replayed-onto-another-tenants-calls", func(t *testing.T) {
		// Billing may direct-get its own stored results, and a request
		// may name any reply subject: the server then publishes billing's
		// stored result, in the account's name, on shipping's calls
		// subject, into shipping's calls stream.
		id := uniqueID("billing-replayed")
		if res := billing.callAndWait(t, "partner", map[string]any{"id": id, "path": "echo", "method": "POST", "body": "billing's"}); !res.OK {
			t.Fatalf("billing's call: %+v", res.Error)
		}
		before := r.partner.Requests().Routes["/echo"]
		// The flow may see its result before the stream has stored it: a
		// direct get then answers 404, and what would be replayed is that
		// empty answer, not the result.
		get := "$JS.API.DIRECT.GET.MTLSRELAY_RESULTS.mtlsrelay.results.billing." + id
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			m, err := billing.nc.Request(get, nil, 2*time.Second)
			if err != nil {
				return err
			}
			if st := m.Header.Get("Status"); st != "" || len(m.Data) == 0 {
				return fmt.Errorf("the result is not stored yet: status %q", st)
			}
			return nil
		})
		if err := billing.nc.PublishRequest(get, "mtlsrelay.calls.shipping.partner", nil); err != nil {
			t.Fatal(err)
		}
		reason := r.deadLetter(t, id)
		if !strings.Contains(reason, "invalid_call") && !strings.Contains(reason, "replayed") {
			t.Errorf("dead letter reason %q; want the replay refused as invalid_call", reason)
		}
		if n := r.partner.Requests().Routes["/echo"] - before; n != 0 {
			t.Errorf("the replayed result was made as shipping's call (%d requests)", n)
		}
	})
	denials := []struct {
		name    string
		tenant  *tenant
		subject string
		do      func(tn *tenant) error
	}{
		{"fail/direct-get-its-own-bucket", billing, "$JS.API.DIRECT.GET.OBJ_mtlsrelay_bodies_billing", func(tn *tenant) error {
			return tn.nc.PublishRequest("$JS.API.DIRECT.GET.OBJ_mtlsrelay_bodies_billing", "mtlsrelay.results.shipping.victim", []byte(`{"last_by_subj":"$O.mtlsrelay_bodies_billing.C.forge"}`))
		}},
		{"fail/read-another-tenants-body-info", shipping, "$JS.API.DIRECT.GET.OBJ_mtlsrelay_bodies_billing.$O.mtlsrelay_bodies_billing.M.x", func(tn *tenant) error {
			return tn.nc.Publish("$JS.API.DIRECT.GET.OBJ_mtlsrelay_bodies_billing.$O.mtlsrelay_bodies_billing.M.x", nil)
		}},
		{"fail/read-another-tenants-body-chunks", shipping, "$JS.API.CONSUMER.CREATE.OBJ_mtlsrelay_bodies_billing", func(tn *tenant) error {
			return tn.nc.Publish("$JS.API.CONSUMER.CREATE.OBJ_mtlsrelay_bodies_billing", []byte(`{"stream_name":"OBJ_mtlsrelay_bodies_billing","config":{"deliver_subject":"_INBOX_shipping.x"}}`))
		}},
		{"fail/write-another-tenants-bodies", shipping, "$O.mtlsrelay_bodies_billing.C.x", func(tn *tenant) error {
			return tn.nc.Publish("$O.mtlsrelay_bodies_billing.C.x", []byte("x"))
		}},
		{"fail/subscribe-another-tenants-bodies", shipping, "$O.mtlsrelay_bodies_billing.>", func(tn *tenant) error {
			_, err := tn.nc.SubscribeSync("$O.mtlsrelay_bodies_billing.>")
			return err
		}},
		// A consumer on its own bucket could deliver to any subject: a
		// forged result into shipping's results.
		{"fail/create-a-consumer-on-its-own-bucket", billing, "$JS.API.CONSUMER.CREATE.OBJ_mtlsrelay_bodies_billing.forger", func(tn *tenant) error {
			return tn.nc.Publish("$JS.API.CONSUMER.CREATE.OBJ_mtlsrelay_bodies_billing.forger", []byte(`{"stream_name":"OBJ_mtlsrelay_bodies_billing","config":{"durable_name":"forger","deliver_subject":"mtlsrelay.results.shipping.order-42"}}`))
		}},
		{"fail/read-the-shared-bodies-bucket", billing, "$JS.API.STREAM.INFO.OBJ_mtlsrelay_bodies", func(tn *tenant) error {
			return tn.nc.Publish("$JS.API.STREAM.INFO.OBJ_mtlsrelay_bodies", nil)
		}},
		{"fail/publish-another-tenants-calls", billing, "mtlsrelay.calls.shipping.partner", func(tn *tenant) error {
			return tn.nc.Publish("mtlsrelay.calls.shipping.partner", []byte(`{"id":"x","path":"echo","reply_to":"mtlsrelay.results.billing.x"}`))
		}},
		{"fail/publish-v1-calls", billing, "mtlsrelay.calls.partner", func(tn *tenant) error {
			return tn.nc.Publish("mtlsrelay.calls.partner", []byte(`{"id":"x","path":"echo"}`))
		}},
		{"fail/publish-another-tenants-direct-calls", billing, "mtlsrelay.rpc.shipping.partner", func(tn *tenant) error {
			return tn.nc.Publish("mtlsrelay.rpc.shipping.partner", []byte(`{"id":"x","path":"echo"}`))
		}},
		{"fail/publish-results", billing, "mtlsrelay.results.shipping.spoofed", func(tn *tenant) error {
			return tn.nc.Publish("mtlsrelay.results.shipping.spoofed", []byte(`{"id":"spoofed","ok":true}`))
		}},
		{"fail/subscribe-another-tenants-results", billing, "mtlsrelay.results.shipping.>", func(tn *tenant) error {
			_, err := tn.nc.SubscribeSync("mtlsrelay.results.shipping.>")
			return err
		}},
		{"fail/subscribe-another-tenants-inbox", billing, "_INBOX_shipping.>", func(tn *tenant) error {
			_, err := tn.nc.SubscribeSync("_INBOX_shipping.>")
			return err
		}},
		{"fail/write-the-registry", billing, "$KV.mtlsrelay_registry.connections.victim", func(tn *tenant) error {
			return tn.nc.Publish("$KV.mtlsrelay_registry.connections.victim", []byte(`{}`))
		}},
		{"fail/write-call-state", shipping, "$KV.mtlsrelay_call_state.t.billing.x", func(tn *tenant) error {
			return tn.nc.Publish("$KV.mtlsrelay_call_state.t.billing.x", []byte(`{}`))
		}},
		{"fail/read-dead-letters", shipping, "mtlsrelay.dead.>", func(tn *tenant) error {
			_, err := tn.nc.SubscribeSync("mtlsrelay.dead.>")
			return err
		}},
		{"fail/delete-a-stream", shipping, "$JS.API.STREAM.DELETE.MTLSRELAY_CALLS_billing", func(tn *tenant) error {
			return tn.nc.Publish("$JS.API.STREAM.DELETE.MTLSRELAY_CALLS_billing", nil)
		}},
		// Consumer names are not scoped by tenant: a tenant may use no
		// consumer API on the results stream (else it could pull, ack or
		// delete another tenant's consumer).
		{"fail/pull-from-a-results-consumer", billing, "$JS.API.CONSUMER.MSG.NEXT.MTLSRELAY_RESULTS.shipping-results", func(tn *tenant) error {
			return tn.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.MTLSRELAY_RESULTS.shipping-results", "_INBOX_billing.x", []byte(`{"batch":1}`))
		}},
		{"fail/delete-a-results-consumer", billing, "$JS.API.CONSUMER.DELETE.MTLSRELAY_RESULTS.shipping-results", func(tn *tenant) error {
			return tn.nc.Publish("$JS.API.CONSUMER.DELETE.MTLSRELAY_RESULTS.shipping-results", nil)
		}},
		{"fail/create-a-results-consumer", billing, "$JS.API.CONSUMER.CREATE.MTLSRELAY_RESULTS.mine.mtlsrelay.results.billing.>", func(tn *tenant) error {
			return tn.nc.Publish("$JS.API.CONSUMER.CREATE.MTLSRELAY_RESULTS.mine.mtlsrelay.results.billing.>", nil)
		}},
		{"fail/ack-a-results-message", billing, "$JS.ACK.MTLSRELAY_RESULTS.shipping-results.1.1.1.1.1.0", func(tn *tenant) error {
			return tn.nc.Publish("$JS.ACK.MTLSRELAY_RESULTS.shipping-results.1.1.1.1.1.0", nil)
		}},
		{"fail/direct-get-another-tenants-result", billing, "$JS.API.DIRECT.GET.MTLSRELAY_RESULTS.mtlsrelay.results.shipping.x", func(tn *tenant) error {
			return tn.nc.Publish("$JS.API.DIRECT.GET.MTLSRELAY_RESULTS.mtlsrelay.results.shipping.x", nil)
		}},
	}
	for _, d := range denials {
		t.Run(d.name, func(t *testing.T) {
			if err := d.do(d.tenant); err != nil && !strings.Contains(err.Error(), "Permissions Violation") {
				t.Fatal(err)
			}
			d.tenant.violated(t, d.subject)
		})
	}
	t.Run("ok/cli-call-as-a-tenant", func(t *testing.T) {
		cfg := writeConfig(t, "nats: {url: \""+r.srv.ClientURL()+"\", user: billing, password: \"value:billing-example-password\"}\n")
		out, errOut, code := runCLI(t, nil, "call", "partner", "--config", cfg, "--tenant", "billing", "--path", "echo")
		if code != 0 || !strings.Contains(out, `"ok": true`) {
			t.Fatalf("call --tenant billing: exit %d\n%s%s", code, out, errOut)
		}
		out, _, code = runCLI(t, nil, "call", "other", "--config", cfg, "--tenant", "billing", "--path", "echo")
		if code != 2 || !strings.Contains(out, "unknown_connection") {
			t.Errorf("call --tenant billing on a connection it may not use: exit %d\n%s", code, out)
		}
	})
	t.Run("fail/tenant-cannot-read-the-registry", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if kv, err := billing.js.KeyValue(short, jobs.RegistryBucket); err == nil {
			if _, err := kv.Get(short, "connections.victim"); err == nil {
				t.Error("billing read the registry")
			}
		}
	})
	t.Run("fail/worker-cannot-write-the-registry", func(t *testing.T) {
		wnc, err := nats.Connect(r.srv.ClientURL(), nats.UserInfo("worker", "worker-example-password"))
		if err != nil {
			t.Fatal(err)
		}
		defer wnc.Close()
		wjs, _ := jetstream.New(wnc)
		kv, err := wjs.KeyValue(ctx, jobs.RegistryBucket)
		if err != nil {
			t.Fatalf("the worker cannot open the registry: %v", err)
		}
		if _, err := kv.Get(ctx, "connections.victim"); err != nil {
			t.Fatalf("the worker cannot read the registry: %v", err)
		}
		short, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := kv.Put(short, "connections.victim", []byte(`{"base_url":"https://evil.example/","profile":"p"}`)); err == nil {
			t.Error("the worker wrote the registry")
		}
		if err := kv.Purge(short, "connections.victim"); err == nil {
			t.Error("the worker purged a registry key")
		}
		if err := wjs.DeleteKeyValue(short, jobs.RegistryBucket); err == nil {
			t.Error("the worker deleted the registry")
		}
	})
	t.Run("ok/admin-writes-the-registry", func(t *testing.T) {
		kv, err := r.adminJS.KeyValue(ctx, jobs.RegistryBucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "connections.admin-made", []byte(`{"base_url":"https://p.example/","profile":"p"}`)); err != nil {
			t.Fatalf("the administrator cannot write the registry: %v", err)
		}
	})
	r.checkRegistryUntouched(t)
}

// checkRegistryUntouched fails when the victim connection of the registry
// was written after the administrator put it.
func (r *tenantRelay) checkRegistryUntouched(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := r.adminJS.KeyValue(ctx, jobs.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "connections.victim")
	if err != nil {
		t.Fatalf("the victim connection is gone: %v", err)
	}
	if e.Revision() != 1 || !strings.Contains(string(e.Value()), "victim.example") {
		t.Errorf("the victim connection was overwritten: revision %d, %s", e.Revision(), e.Value())
	}
}

// stateKeys lists the call-state bucket's keys.
func (r *tenantRelay) stateKeys(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := r.adminJS.KeyValue(ctx, worker.StateBucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatal(err)
	}
	return keys
}

// Each attack a hostile flow can make through the wire contract, on the
// shipped accounts file with a real mTLS partner: the call ends with the
// documented code, and nothing is written where it should not be.
func TestTenantAttacks(t *testing.T) {
	// The real binary, from its config file: it reads the registry too.
	r := startTenantRelayWith(t, 4, true)
	billing, shipping := r.tenant(t, "billing"), r.tenant(t, "shipping")
	// shipping listens to its own results: no attack may publish there.
	spoofed := make(chan *nats.Msg, 64)
	sub, err := shipping.nc.ChanSubscribe("mtlsrelay.results.shipping.>", spoofed)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	statesBefore := r.stateKeys(t)

	// Attacks whose reply_to is refused: a dead letter, and no result
	// anywhere.
	for _, tc := range []struct{ name, replyTo string }{
		{"reply-to-registry", "$KV.mtlsrelay_registry.connections.victim"},
		{"reply-to-registry-profile", "$KV.mtlsrelay_registry.profiles.victim"},
		{"reply-to-call-state", "$KV.mtlsrelay_call_state.t.shipping.x"},
		{"reply-to-stream-api", "$JS.API.STREAM.DELETE.MTLSRELAY_CALLS_shipping"},
		{"reply-to-another-tenants-results", "mtlsrelay.results.shipping.order-42"},
		{"reply-to-another-tenants-inbox", "_INBOX_shipping.abc"},
		{"reply-to-the-relays-calls", "mtlsrelay.calls.shipping.partner"},
		{"reply-to-v1-results", "mtlsrelay.results.order-42"},
	} {
		t.Run("fail/"+tc.name, func(t *testing.T) {
			id := uniqueID("attack")
			data, _ := json.Marshal(map[string]any{"id": id, "path": "echo", "reply_to": tc.replyTo})
			billing.publish(t, "partner", id, data)
			if reason := r.deadLetter(t, id); !strings.HasPrefix(reason, "invalid_call: reply_to") {
				t.Errorf("dead letter reason %q, want invalid_call about reply_to", reason)
			}
		})
	}
	t.Run("fail/unknown-connection-with-reply-to-registry", func(t *testing.T) {
		// Rejected for its connection, the call still publishes nothing
		// where results may not go: before, this wrote profiles.victim.
		id := uniqueID("attack")
		data, _ := json.Marshal(map[string]any{"id": id, "path": "echo", "reply_to": "$KV.mtlsrelay_registry.profiles.victim"})
		billing.publish(t, "nosuch", id, data)
		if reason := r.deadLetter(t, id); !strings.HasPrefix(reason, "unknown_connection") {
			t.Errorf("dead letter reason %q, want unknown_connection", reason)
		}
		short, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		kv, _ := r.adminJS.KeyValue(short, jobs.RegistryBucket)
		if e, err := kv.Get(short, "profiles.victim"); err == nil {
			t.Errorf("profiles.victim was written: %s", e.Value())
		}
	})
	t.Run("fail/registry-profile-naming-the-workers-files", func(t *testing.T) {
		// Write access to the registry does not give use of the worker's
		// own keystores: a registry profile may not name file: secrets.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		kv, err := r.adminJS.KeyValue(ctx, jobs.RegistryBucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "profiles.stolen", []byte(`{"keystore":"file:`+fixture(t, "client-openssl.p12")+`","password":"env:MTLSRELAY_NO_SUCH_VARIABLE"}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "connections.stolen", []byte(`{"base_url":"`+r.partner.URL()+`","profile":"stolen"}`)); err != nil {
			t.Fatal(err)
		}
		var res *jobs.Result
		checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
			res = shipping.callAndWait(t, "stolen", map[string]any{"id": uniqueID("stolen"), "path": "echo"})
			if res.Error != nil && res.Error.Code == jobs.CodeUnknownConnection {
				return fmt.Errorf("the workers have not read the registry entry yet")
			}
			return nil
		})
		if res.OK || res.Error == nil || res.Error.Code != jobs.CodeSecretUnavailable || !strings.Contains(res.Error.Message, "registry.allow_local_refs") {
			t.Fatalf("result %+v; want secret_unavailable naming registry.allow_local_refs", res.Error)
		}
	})

	// Attacks that get a result on the tenant's own results subject.
	long := strings.Repeat("a", 10)
	for _, tc := range []struct {
		name, conn string
		call       map[string]any
		code       jobs.Code
		says       string
	}{
		{"connection-not-allowed", "other", map[string]any{"path": "echo"}, jobs.CodeUnknownConnection, `no connection named "other"`},
		{"connection-unknown", "nosuch", map[string]any{"path": "echo"}, jobs.CodeUnknownConnection, `no connection named "nosuch"`},
		{"host-header", "partner", map[string]any{"path": "echo", "headers": map[string][]string{"Host": {"db.internal"}}}, jobs.CodeInvalidCall, `header "Host" cannot be set`},
		{"connect-method", "partner", map[string]any{"method": "CONNECT", "path": "db.internal:5432"}, jobs.CodeInvalidCall, "CONNECT is not allowed"},
		{"trace-method", "partner", map[string]any{"method": "TRACE", "path": "echo"}, jobs.CodeInvalidCall, "TRACE is not allowed"},
		{"path-dot-dot", "partner", map[string]any{"path": "tenantA/../../admin/users"}, jobs.CodeInvalidCall, "dot-segments"},
		{"path-encoded-dot-dot", "partner", map[string]any{"path": "tenantA/%2e%2e/%2e%2e/admin/users"}, jobs.CodeInvalidCall, "dot-segments"},
		{"path-replaces-query", "partner", map[string]any{"path": "echo?tenant=B"}, jobs.CodeInvalidCall, "tenant"},
		{"query-replaces-query", "partner", map[string]any{"path": "echo", "query": map[string][]string{"tenant": {"B"}}}, jobs.CodeInvalidCall, "tenant"},
		{"timeout-above-connection", "limited", map[string]any{"path": "echo", "timeout_ms": 60000}, jobs.CodeInvalidCall, "above connection limited's timeout"},
		{"max-attempts-above-connection", "limited", map[string]any{"path": "echo", "max_attempts": 100}, jobs.CodeInvalidCall, "above connection limited's max_attempts"},
		{"header-control-character", "partner", map[string]any{"path": "echo", "headers": map[string][]string{"X-A": {"a\x01b" + long}}}, jobs.CodeInvalidCall, "control character U+0001"},
	} {
		t.Run("fail/"+tc.name, func(t *testing.T) {
			tc.call["id"] = uniqueID("attack")
			res := billing.callAndWait(t, tc.conn, tc.call)
			if res.OK || res.Error == nil || res.Error.Code != tc.code || !strings.Contains(res.Error.Message, tc.says) {
				t.Fatalf("result %+v; want %s saying %q", res.Error, tc.code, tc.says)
			}
		})
	}
	t.Run("fail/unknown-and-not-allowed-read-alike", func(t *testing.T) {
		a := billing.callAndWait(t, "other", map[string]any{"id": uniqueID("alike"), "path": "echo"})
		b := billing.callAndWait(t, "nosuch2", map[string]any{"id": uniqueID("alike"), "path": "echo"})
		if strings.ReplaceAll(a.Error.Message, "other", "X") != strings.ReplaceAll(b.Error.Message, "nosuch2", "X") {
			t.Errorf("a connection the tenant may not use reads differently from one that does not exist:\n%s\n%s", a.Error.Message, b.Error.Message)
		}
	})
	t.Run("fail/ambiguous-json", func(t *testing.T) {
		id := uniqueID("attack")
		reply := jobs.Subjects{}.TenantResult("billing", id)
		s, err := billing.nc.SubscribeSync(reply)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Unsubscribe()
		billing.publish(t, "partner", id, []byte(`{"id":"`+id+`","ID":"other","path":"echo","reply_to":"`+reply+`"}`))
		// Not decoded as a call: no result, a dead letter under its
		// stream sequence.
		checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			r.mu.Lock()
			defer r.mu.Unlock()
			for key, msgs := range r.dead {
				if strings.HasPrefix(key, "seq-") && strings.Contains(string(msgs[0].Data), id) {
					if reason := msgs[0].Header.Get(jobs.HeaderDeadReason); !strings.Contains(reason, `member "ID" of the call must be spelled "id"`) {
						return fmt.Errorf("dead letter reason %q", reason)
					}
					return nil
				}
			}
			return fmt.Errorf("no dead letter for the ambiguous call")
		})
		if m, err := s.NextMsg(500 * time.Millisecond); err == nil {
			t.Errorf("an ambiguous call got a result: %s", m.Data)
		}
	})
	t.Run("fail/duplicate-window-of-another-tenant", func(t *testing.T) {
		// billing publishes first with the id and Nats-Msg-Id shipping
		// will use; shipping's call still runs, once.
		id := uniqueID("shared-id")
		data, _ := json.Marshal(map[string]any{"id": id, "path": "echo", "reply_to": jobs.Subjects{}.TenantResult("billing", id)})
		billing.publish(t, "partner", id, data)
		res := shipping.callAndWait(t, "partner", map[string]any{"id": id, "path": "echo", "headers": map[string][]string{partner.KeyHeader: {"shipping-" + id}}})
		if !res.OK {
			t.Fatalf("shipping's call with billing's id: %+v", res.Error)
		}
		if got := r.partner.KeyCounts()["shipping-"+id]; got != 1 {
			t.Errorf("shipping's call reached the partner %d times, want once", got)
		}
	})
	t.Run("fail/v1-subject-while-tenants-are-configured", func(t *testing.T) {
		// Only a user allowed v1 subjects (the administrator here) can
		// publish there; the relay answers unknown_connection.
		id := uniqueID("v1")
		reply := "mtlsrelay.results.v1." + id
		res := callRaw(t, r.admin, r.adminJS, "partner", id, reply, []byte(`{"id":"`+id+`","path":"echo","reply_to":"`+reply+`"}`))
		if res.Error == nil || res.Error.Code != jobs.CodeUnknownConnection {
			t.Fatalf("v1 call with tenants configured: %+v", res)
		}
	})

	// Nothing was written where it should not be.
	r.checkRegistryUntouched(t)
	for _, k := range r.stateKeys(t) {
		if !slices.Contains(statesBefore, k) && !strings.HasPrefix(k, "t.billing.") && !strings.HasPrefix(k, "t.shipping.") {
			t.Errorf("call-state key %q written outside the tenants' own keys", k)
		}
	}
	for {
		select {
		case m := <-spoofed:
			var res jobs.Result
			_ = json.Unmarshal(m.Data, &res)
			// shipping's own calls; anything else came from an attack.
			if !strings.HasPrefix(res.ID, "shared-id") && !strings.HasPrefix(res.ID, "shipping-client") && !strings.HasPrefix(res.ID, "stolen") {
				t.Errorf("a result reached shipping's subjects from an attack: %s: %s", m.Subject, m.Data)
			}
			continue
		default:
		}
		break
	}
}

// publishAsync publishes n calls of tenant tn, made by mk, with JetStream's
// asynchronous publish, and returns how many were stored and how many
// its stream's duplicate window dropped.
func (tn *tenant) publishAsync(t *testing.T, n int, mk func(i int) (conn, msgID string, data []byte)) (stored, duplicates int) {
	t.Helper()
	js, err := jetstream.New(tn.nc, jetstream.WithPublishAsyncMaxPending(2000))
	if err != nil {
		t.Fatal(err)
	}
	futures := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		conn, msgID, data := mk(i)
		msg := nats.NewMsg(jobs.Subjects{}.TenantCalls(tn.name, conn))
		msg.Data = data
		msg.Header.Set(jobs.HeaderMsgID, msgID)
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			t.Fatalf("%s async publish %d: %v", tn.name, i, err)
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s's %d publishes not acknowledged within 2 minutes", tn.name, n)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				duplicates++
			} else {
				stored++
			}
		case err := <-f.Err():
			t.Fatalf("%s publish %d: %v", tn.name, i, err)
		}
	}
	return stored, duplicates
}

// Isolation, measured: tenant billing floods 10,000 calls with the ids and
// Nats-Msg-Ids shipping will use, half of them with reply_to under
// shipping's results; then shipping's 1,000 calls each get exactly one
// correct result, and billing gets only refusals.
func TestTenantIsolation(t *testing.T) {
	r := startTenantRelay(t, 16)
	a, b := r.tenant(t, "billing"), r.tenant(t, "shipping")
	const bCalls, aFlood = 1000, 10000
	run := uniqueID("iso")
	bID := func(i int) string { return fmt.Sprintf("%s-%d", run, i) }

	var mu sync.Mutex
	bResults := map[string][]*nats.Msg{}
	bSub, err := b.nc.Subscribe("mtlsrelay.results.shipping.>", func(m *nats.Msg) {
		mu.Lock()
		bResults[m.Subject] = append(bResults[m.Subject], m)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bSub.Unsubscribe()
	aResults := map[jobs.Code]int{}
	aSub, err := a.nc.Subscribe("mtlsrelay.results.billing.>", func(m *nats.Msg) {
		var res jobs.Result
		_ = json.Unmarshal(m.Data, &res)
		mu.Lock()
		if res.Error != nil {
			aResults[res.Error.Code]++
		} else {
			aResults["ok"]++
		}
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer aSub.Unsubscribe()

	start := time.Now()
	aStored, aDup := a.publishAsync(t, aFlood, func(i int) (string, string, []byte) {
		id := bID(i % bCalls)
		if i%2 == 0 {
			// Aimed at shipping's result subject: refused, dead-lettered.
			data, _ := json.Marshal(map[string]any{"id": id, "path": "echo", "reply_to": jobs.Subjects{}.TenantResult("shipping", id)})
			return "partner", id, data
		}
		// A connection billing may not use: unknown_connection.
		data, _ := json.Marshal(map[string]any{"id": id, "path": "echo", "reply_to": jobs.Subjects{}.TenantResult("billing", id)})
		return "other", id, data
	})
	flood := time.Since(start)
	start = time.Now()
	bStored, bDup := b.publishAsync(t, bCalls, func(i int) (string, string, []byte) {
		id := bID(i)
		data, _ := json.Marshal(map[string]any{"id": id, "path": "echo", "reply_to": jobs.Subjects{}.TenantResult("shipping", id),
			"headers": map[string][]string{partner.KeyHeader: {"shipping-" + id}}})
		return "partner", id, data
	})
	if bStored != bCalls || bDup != 0 {
		t.Fatalf("shipping's calls: %d stored, %d dropped as duplicates; want all %d stored", bStored, bDup, bCalls)
	}
	checkFor(t, 2*time.Minute, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(bResults) < bCalls {
			return fmt.Errorf("%d of shipping's %d calls have a result", len(bResults), bCalls)
		}
		return nil
	})
	bDone := time.Since(start)
	time.Sleep(time.Second) // let any extra result arrive
	mu.Lock()
	defer mu.Unlock()
	keys := r.partner.KeyCounts()
	for i := range bCalls {
		id := bID(i)
		msgs := bResults[jobs.Subjects{}.TenantResult("shipping", id)]
		if len(msgs) != 1 {
			t.Errorf("shipping's call %s got %d results, want exactly one", id, len(msgs))
			continue
		}
		var res jobs.Result
		if err := json.Unmarshal(msgs[0].Data, &res); err != nil || !res.OK || res.ID != id {
			t.Errorf("shipping's call %s: result %v %+v", id, err, res.Error)
			continue
		}
		var echo partner.EchoResponse
		if err := json.Unmarshal([]byte(res.Body), &echo); err != nil || len(echo.Headers[partner.KeyHeader]) != 1 || echo.Headers[partner.KeyHeader][0] != "shipping-"+id {
			t.Errorf("shipping's call %s: the partner saw another call: %v %v", id, err, echo.Headers[partner.KeyHeader])
		}
		if keys["shipping-"+id] != 1 {
			t.Errorf("shipping's call %s reached the partner %d times, want once", id, keys["shipping-"+id])
		}
	}
	if len(bResults) != bCalls {
		t.Errorf("shipping's subjects got results for %d calls, want %d: billing's results reached shipping", len(bResults), bCalls)
	}
	// billing's stored calls all ended refused: dead letters for the
	// reply_tos under shipping, unknown_connection for the others.
	r.mu.Lock()
	var aDead int
	for i := range bCalls {
		for _, m := range r.dead[bID(i)] {
			if strings.HasPrefix(m.Header.Get(jobs.HeaderDeadReason), "invalid_call: reply_to") && strings.HasPrefix(m.Header.Get(jobs.HeaderMsgID), "billing.") {
				aDead++
			}
		}
	}
	r.mu.Unlock()
	if aResults["ok"] != 0 {
		t.Errorf("%d of billing's flood calls succeeded", aResults["ok"])
	}
	if aDead+aResults[jobs.CodeUnknownConnection] < aStored {
		t.Errorf("billing's flood: %d stored, but only %d dead letters (invalid_call) and %d unknown_connection results", aStored, aDead, aResults[jobs.CodeUnknownConnection])
	}
	t.Logf("billing published %d calls in %s (%d stored, %d dropped by billing's own duplicate window); they ended as %d invalid_call dead letters and %d unknown_connection results",
		aFlood, flood.Round(time.Millisecond), aStored, aDup, aDead, aResults[jobs.CodeUnknownConnection])
	t.Logf("shipping's %d calls with the same ids and Nats-Msg-Ids: all stored, each one result from its own partner call, all within %s", bCalls, bDone.Round(time.Millisecond))
}

// Fairness, measured: with 50,000 of billing's calls queued against a slow
// route (100 ms each, 8 slots: about 10 minutes of work), shipping's calls
// are served in turn with them and finish in seconds.
func TestTenantFairness(t *testing.T) {
	r := startTenantRelay(t, 8)
	a, b := r.tenant(t, "billing"), r.tenant(t, "shipping")
	const aQueued, bCalls = 50000, 100
	run := uniqueID("fair")
	start := time.Now()
	a.publishAsync(t, aQueued, func(i int) (string, string, []byte) {
		id := fmt.Sprintf("%s-a%d", run, i)
		data, _ := json.Marshal(map[string]any{"id": id, "path": "slow", "query": map[string][]string{"ms": {"100"}},
			"reply_to": jobs.Subjects{}.TenantResult("billing", id)})
		return "slow", id, data
	})
	t.Logf("billing queued %d calls in %s", aQueued, time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	aStream, err := r.adminJS.Stream(ctx, jobs.TenantStream("billing"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = aStream.Purge(context.Background()) })

	slowBefore := r.partner.Requests().Routes["/slow"]
	start = time.Now()
	var wg sync.WaitGroup
	var failed sync.Map
	for i := range bCalls {
		wg.Go(func() {
			res, err := b.client.Call(ctx, &jobs.Call{ID: fmt.Sprintf("%s-b%d", run, i), Connection: "partner", Path: "echo"})
			if err != nil || !res.OK {
				failed.Store(i, fmt.Sprint(err, res))
			}
		})
	}
	wg.Wait()
	bTook := time.Since(start)
	aDone := r.partner.Requests().Routes["/slow"] - slowBefore
	failed.Range(func(k, v any) bool {
		t.Errorf("shipping's call %v: %v", k, v)
		return true
	})
	info, err := aStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	left := info.State.Msgs
	share := float64(bCalls) / float64(bCalls+int(aDone))
	// billing's backlog drains at about 8 slots / 100 ms.
	drain := time.Duration(float64(left) / 80 * float64(time.Second))
	t.Logf("shipping's %d calls finished in %s while billing's backlog held %d calls (about %s of work left); meanwhile %d of billing's calls ran: shipping had %.0f%% of the calls finished",
		bCalls, bTook.Round(time.Millisecond), left, drain.Round(time.Second), aDone, 100*share)
	if left < aQueued*8/10 {
		t.Errorf("billing's backlog fell to %d of %d before shipping's calls finished: shipping waited behind it", left, aQueued)
	}
	if bTook > drain/20 {
		t.Errorf("shipping's calls took %s, more than a twentieth of billing's backlog (%s): not served in turn", bTook, drain)
	}
}
