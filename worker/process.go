package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// attempt makes attempt number n of call: it resolves the connection and
// the profile's TLS material, then lets the executor make the request. It
// never panics into its caller: a panic becomes an internal error result.
func (w *Worker) attempt(ctx context.Context, call *jobs.Call, n int, queued time.Duration) (out Outcome, conn *Connection) {
	log := zerolog.Ctx(ctx)
	defer func() {
		if p := recover(); p != nil {
			// The panic value may hold call data: log its type only.
			log.Error().Str("panic_type", typeName(p)).Msg("attempt panicked; reporting internal error")
			out = Outcome{Result: jobs.FailedResult(call, jobs.Errorf(jobs.CodeInternal, "mtlsrelay failed while making this call; see the worker log"))}
		}
		if out.Result != nil {
			out.Result.Attempt = n
			out.Result.Worker = w.Name()
			out.Result.Timing.QueuedMS = jobs.Millis(queued)
		}
	}()
	conn, prof, err := w.catalog.load().lookup(call.Connection)
	if err != nil {
		return Outcome{Result: jobs.FailedResult(call, err)}, nil
	}
	mat, err := w.resolver.Resolve(ctx, conn.Profile, *prof)
	if err != nil {
		return Outcome{Result: jobs.FailedResult(call, err)}, conn
	}
	return w.exec.Attempt(ctx, call, conn, mat), conn
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }
