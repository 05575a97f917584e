package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/client"
)

// Bodies larger than the NATS server's max_payload (its default, 1 MB)
// travel through the Object Store bucket mtlsrelay_bodies: each response
// arrives as a body_ref whose bytes and SHA-256 match what the partner
// sent, a request body uploaded first reaches the partner whole, and the
// partner is called once for each.
func TestLargeBodies(t *testing.T) {
	srv := startNATS(t)
	p := startPartner(t)
	nc, js := connect(t, srv.ClientURL())
	if max := nc.MaxPayload(); max != 1<<20 {
		t.Fatalf("server max_payload = %d, want the default 1 MiB", max)
	}
	startWorker(t, srv.ClientURL(), configYAML(t, `
worker: {concurrency: 4, admin_addr: "off"}
registry: {disabled: true}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  big: {base_url: "PARTNER", profile: p, max_response_bytes: 1073741824, timeout: 5m, max_attempts: 1}
  small: {base_url: "PARTNER", profile: p, max_response_bytes: 3000000, max_attempts: 1}
`, "PARTNER", p.URL()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bodies, err := js.ObjectStore(ctx, jobs.BucketBodies)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		size    int64
		chunked bool
	}{
		{"2MB", 2_000_000, false},
		{"50MB-chunked", 50_000_000, true},
		{"1GiB", 1 << 30, false},
	} {
		t.Run("ok/response-"+tc.name, func(t *testing.T) {
			before := p.Requests().Routes["/bytes"]
			q := map[string][]string{"n": {fmt.Sprint(tc.size)}, "pattern": {"1"}}
			if tc.chunked {
				q["chunked"] = []string{"1"}
			}
			start := time.Now()
			res := call(t, nc, js, "big", map[string]any{"path": "bytes", "query": q})
			took := time.Since(start)
			if !res.OK || res.BodyRef == nil {
				t.Fatalf("result ok=%v error=%+v body_ref=%+v; want a body_ref", res.OK, res.Error, res.BodyRef)
			}
			if res.Body != "" || res.BodyBase64 != nil {
				t.Error("the result carries the body inline as well")
			}
			want := partner.PatternSHA256(tc.size)
			ref := res.BodyRef
			if ref.Bucket != jobs.BucketBodies || ref.Size != tc.size || ref.SHA256 != want || ref.ContentType != "application/octet-stream" {
				t.Errorf("body_ref %+v; want bucket %s, size %d, sha256 %s", ref, jobs.BucketBodies, tc.size, want)
			}
			obj, err := bodies.Get(ctx, ref.Name)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, obj)
			obj.Close()
			if err != nil || n != tc.size || hex.EncodeToString(h.Sum(nil)) != want {
				t.Errorf("stored object: %d bytes, sha256 %x, err %v; want %d bytes, %s", n, h.Sum(nil), err, tc.size, want)
			}
			if got := p.Requests().Routes["/bytes"] - before; got != 1 {
				t.Errorf("the partner was called %d times, want once", got)
			}
			t.Logf("%d bytes through the relay into the Object Store in %s", tc.size, took.Round(time.Millisecond))
		})
	}

	t.Run("ok/request-body-by-reference", func(t *testing.T) {
		const size = 20 << 20
		if _, err := bodies.Put(ctx, jetstream.ObjectMeta{Name: "uploads/twenty-mb"}, partner.Pattern(size)); err != nil {
			t.Fatal(err)
		}
		before := p.Requests().Routes["/sha256"]
		res := call(t, nc, js, "big", map[string]any{"method": "POST", "path": "sha256", "body_ref": map[string]string{"name": "uploads/twenty-mb"}})
		if !res.OK {
			t.Fatalf("result %+v", res.Error)
		}
		var got partner.BodyDigest
		if err := json.Unmarshal(res.ResponseBody(), &got); err != nil {
			t.Fatal(err)
		}
		if got.Size != size || got.SHA256 != partner.PatternSHA256(size) {
			t.Errorf("the partner received %d bytes, sha256 %s; want %d, %s", got.Size, got.SHA256, size, partner.PatternSHA256(size))
		}
		if n := p.Requests().Routes["/sha256"] - before; n != 1 {
			t.Errorf("the partner was called %d times, want once", n)
		}
	})
	t.Run("ok/client-sends-and-reads-body-refs", func(t *testing.T) {
		fc, err := client.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		// A request body over the client's inline bound goes by body_ref.
		body, _ := io.ReadAll(partner.Pattern(1 << 20))
		res, err := fc.Call(ctx, &jobs.Call{ID: uniqueID("client-up"), Connection: "big", Method: "POST", Path: "sha256", BodyBase64: body})
		if err != nil || !res.OK {
			t.Fatalf("%v %+v", err, res)
		}
		var got partner.BodyDigest
		if err := json.Unmarshal(res.ResponseBody(), &got); err != nil || got.Size != 1<<20 || got.SHA256 != partner.PatternSHA256(1<<20) {
			t.Errorf("the partner received %+v (%v)", got, err)
		}
		// A response body_ref is read into the result for the flow, checked.
		res, err = fc.Call(ctx, &jobs.Call{ID: uniqueID("client-down"), Connection: "big", Path: "bytes", Query: map[string][]string{"n": {"2000000"}, "pattern": {"1"}}})
		if err != nil || !res.OK || res.BodyRef == nil {
			t.Fatalf("%v %+v", err, res)
		}
		h := sha256.Sum256(res.ResponseBody())
		if hex.EncodeToString(h[:]) != partner.PatternSHA256(2000000) {
			t.Errorf("the client read another body than the partner sent")
		}
	})
	t.Run("fail/request-body-ref-missing", func(t *testing.T) {
		res := call(t, nc, js, "big", map[string]any{"method": "POST", "path": "sha256", "body_ref": map[string]string{"name": "uploads/never"}})
		if res.Error == nil || res.Error.Code != jobs.CodeInvalidCall {
			t.Fatalf("result %+v; want invalid_call", res.Error)
		}
	})
	t.Run("fail/response-over-max-response-bytes-streamed", func(t *testing.T) {
		// A connection's limit still holds when the body streams: nothing is
		// kept of it.
		for _, chunked := range []string{"0", "1"} {
			res := call(t, nc, js, "small", map[string]any{"path": "bytes", "query": map[string][]string{"n": {"5000000"}, "chunked": {chunked}}})
			if res.Error == nil || res.Error.Code != jobs.CodeResponseTooLarge || res.BodyRef != nil {
				t.Fatalf("chunked=%s: result %+v, body_ref %+v; want response_too_large and no body_ref", chunked, res.Error, res.BodyRef)
			}
			if _, err := bodies.GetInfo(ctx, "results/"+res.ID); err == nil {
				t.Errorf("chunked=%s: a body over the limit was kept in the bucket", chunked)
			}
		}
	})
}

// A direct call's large response comes back as a body_ref too.
func TestLargeBodyDirect(t *testing.T) {
	nc, js, _ := startSmallRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bodies, err := js.ObjectStore(ctx, jobs.BucketBodies)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []map[string][]string{
		{"n": {"2000000"}, "pattern": {"1"}},
		{"n": {"200000"}, "ctrl": {"1"}},
	} {
		data, _ := json.Marshal(map[string]any{"id": uniqueID("direct-large"), "path": "bytes", "query": q})
		m, err := nc.RequestWithContext(ctx, "mtlsrelay.rpc.partner", data)
		if err != nil {
			t.Fatal(err)
		}
		var res jobs.Result
		if err := json.Unmarshal(m.Data, &res); err != nil {
			t.Fatal(err)
		}
		if !res.OK || res.BodyRef == nil {
			t.Fatalf("%v: result ok=%v error=%+v body_ref=%+v", q, res.OK, res.Error, res.BodyRef)
		}
		info, err := bodies.GetInfo(ctx, res.BodyRef.Name)
		if err != nil || int64(info.Size) != res.BodyRef.Size {
			t.Errorf("%v: object %v %v", q, info, err)
		}
	}
}
