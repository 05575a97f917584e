package bench_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// The hot pieces of a relayed call, outside the network: decoding the call,
// encoding the result, finding the profile's TLS material.

// typicalCall is a REST POST with a 256-byte JSON body, two headers,
// metadata and a reply subject: what a flow usually sends.
var typicalCall = func() []byte {
	body := padJSON(`{"order":42,"customer":"c-1001","lines":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"`, 256)
	c := jobs.Call{
		ID:         "flow-a.order-42.submit:1",
		Connection: "partner-a-api",
		Method:     "POST",
		Path:       "v1/orders",
		Query:      map[string][]string{"dry_run": {"false"}},
		Headers:    map[string][]string{"Content-Type": {"application/json"}, "X-Request-Id": {"3f1c9a2e-8d4b-4f5a-9c1e-2b7d6a0e4f11"}},
		Body:       body,
		ReplyTo:    "mtlsrelay.results.flow-a.order-42",
		Metadata:   map[string]string{"flow": "flow-a", "step": "submit"},
	}
	b, err := json.Marshal(c)
	if err != nil {
		panic(err)
	}
	return b
}()

// padJSON closes prefix, an object open in a string value, padded to size bytes.
func padJSON(prefix string, size int) string {
	return prefix + strings.Repeat("x", size-len(prefix)-2) + `"}`
}

func BenchmarkDecodeCall(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalCall)))
	for b.Loop() {
		if _, err := jobs.DecodeCall(typicalCall, "partner-a-api"); err != nil {
			b.Fatal(err)
		}
	}
}

// typicalResult is the successful result of typicalCall: a 256-byte JSON
// body, a few response headers, timing and the client certificate.
func typicalResult() *jobs.Result {
	return &jobs.Result{
		ID:         "flow-a.order-42.submit:1",
		Connection: "partner-a-api",
		Metadata:   map[string]string{"flow": "flow-a", "step": "submit"},
		OK:         true,
		Status:     http.StatusCreated,
		Headers: map[string][]string{
			"Content-Type":   {"application/json"},
			"Content-Length": {"256"},
			"Date":           {"Mon, 02 Mar 2026 10:00:00 GMT"},
			"Location":       {"/v1/orders/42"},
		},
		Body:    padJSON(`{"order":42,"status":"accepted","eta":"2026-03-03T10:00:00Z","lines":2,"note":"`, 256),
		Attempt: 1,
		Worker:  "worker-7f9c-1234",
		Timing:  jobs.Timing{QueuedMS: 0.412, TTFBMS: 1.873, TotalMS: 2.051},
		ClientCert: &jobs.ClientCert{
			Subject:  "CN=flow-a-client,O=Example",
			Serial:   "5a1f0c3e9b7d2a4c6e8f0a1b3c5d7e9f",
			NotAfter: time.Date(2027, 3, 2, 10, 0, 0, 0, time.UTC),
		},
		CompletedAt: time.Date(2026, 3, 2, 10, 0, 0, 2051000, time.UTC),
	}
}

func BenchmarkEncodeResult(b *testing.B) {
	res := typicalResult()
	data, err := jobs.EncodeResult(res)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := jobs.EncodeResult(res); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResolveCacheHit resolves a profile whose material is cached and
// fresh (the refresh interval is long): the cost every attempt pays to find
// its TLS material. "parallel" runs it from GOMAXPROCS goroutines at once,
// as a worker's calls in flight do.
func BenchmarkResolveCacheHit(b *testing.B) {
	dir, err := filepath.Abs(filepath.Join("..", "..", "secrets", "testdata"))
	if err != nil {
		b.Fatal(err)
	}
	// The fixtures' public test password (secrets/testdata/README.md).
	p := secrets.Profile{
		Keystore:   "file:" + filepath.Join(dir, "client-openssl.p12"),
		Password:   "value:fixture-pass-123",
		Truststore: "file:" + filepath.Join(dir, "ca.pem"),
	}
	r := secrets.NewResolver(secrets.DefaultSources(dir), secrets.WithRefreshInterval(time.Hour))
	ctx := context.Background()
	if _, err := r.Resolve(ctx, "partner-a", p); err != nil {
		b.Fatalf("first resolve: %v", err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Resolve(ctx, "partner-a", p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := r.Resolve(ctx, "partner-a", p); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
