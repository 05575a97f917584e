package outbound_test

import (
	"context"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// BenchmarkAttemptREST measures one REST attempt against the local partner
// over a kept-alive mTLS connection (HTTP/2).
func BenchmarkAttemptREST(b *testing.B) {
	p := newExecPKI(b)
	srv := startExecPartner(b, p, nil)
	x := newExecutor(b)
	conn := &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a"}
	mat := execMaterial(p, "v1", nil)
	call := restCall(b, jobs.Call{Method: "POST", Path: "/echo", Body: `{"order":42}`})
	if out := x.Attempt(context.Background(), call, conn, mat); !out.Result.OK {
		b.Fatalf("warm-up call: %+v", out.Result)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if out := x.Attempt(context.Background(), call, conn, mat); !out.Result.OK {
				b.Errorf("call failed: %v", out.Result.Error)
				return
			}
		}
	})
}
