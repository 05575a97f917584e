package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Spec is one measured run of the relay's JetStream pattern.
type Spec struct {
	// Tag names the run's streams and subjects (one subject token); each
	// run gets streams of its own, deleted afterwards.
	Tag string
	// Partitions is P: calls are spread over P calls streams, each with
	// its own consumer "workers" and its own results stream.
	Partitions int
	// Calls is how many calls the run makes.
	Calls int
	// Connections is how many distinct connection names the calls use;
	// the partition of a call is a hash of its connection name.
	Connections int
	// Payload is the size of a call's and of a result's body in bytes.
	Payload int
	// Window bounds the async publishes awaiting their PubAck, per
	// JetStream context (the flows', and each worker's result window).
	Window int
	// Workers is how many pull loops take calls, in all: each partition
	// gets Workers/Partitions (at least one), so that P=1 and P=4 compare
	// the same number of workers, not four times as many.
	Workers int
	// Batch is the most calls one Fetch asks for.
	Batch int
	// DupEvery, when > 0, publishes every DupEvery-th call twice (a flow
	// retrying an Enqueue) and its result twice (a worker publishing the
	// result again after a lost ack): both must be stored once.
	DupEvery int
	// CheckEach reads every stored result back and checks that each call
	// has exactly one (small runs; a large run checks the counts).
	CheckEach bool
	// Spread places the Raft leaders by hand over the servers (see
	// moveLeader); else they stay where the server put them.
	Spread bool
	// Variant changes the per-call pattern (see variants.go); the zero
	// value is the relay's own pattern.
	Variant Variant
	// PIDs are server processes whose CPU time the run reads from
	// /proc/<pid>/stat when it starts and when the last call is acked
	// (Outcome.ServerCPU); none, nothing is read.
	PIDs []int
}

// Outcome is what one run measured and checked.
type Outcome struct {
	Elapsed time.Duration
	// CallsPerSec is Calls / Elapsed: from the first publish to the ack of
	// the last call.
	CallsPerSec float64
	// CallDuplicates and ResultDuplicates count the publishes JetStream
	// answered as duplicates (PubAck.Duplicate).
	CallDuplicates, ResultDuplicates int64
	// Stored is how many results the results streams hold.
	Stored uint64
	// Leaders is where each Raft leader was during the run.
	Leaders []Leader
	// ServerCPU is the CPU time (user + system) Spec.PIDs used together
	// over Elapsed; ServerCPUOK is false when it could not be read.
	ServerCPU   time.Duration
	ServerCPUOK bool
}

// Leader is the Raft leader of one stream or consumer.
type Leader struct {
	Stream, Consumer, Server string
}

func (s Spec) callsStream(p int) string   { return fmt.Sprintf("SB_%s_CALLS_%d", s.Tag, p) }
func (s Spec) resultsStream(p int) string { return fmt.Sprintf("SB_%s_RESULTS_%d", s.Tag, p) }
func (s Spec) callSubject(p int, conn string) string {
	return fmt.Sprintf("sb.%s.calls.%d.%s", s.Tag, p, conn)
}
func (s Spec) resultSubject(p int, id string) string {
	return fmt.Sprintf("sb.%s.results.%d.%s", s.Tag, p, id)
}
func (s Spec) callID(i int) string { return fmt.Sprintf("%s-%08d", s.Tag, i) }

// partitionOf is the partition of a connection: FNV-1a of its name modulo
// P, the hash nats-server's partition(n, ...) subject mapping uses, so a
// connection's calls, and the retries of one call, always reach the same
// stream (dedupe is per stream).
func partitionOf(conn string, p int) int {
	h := fnv.New32a()
	h.Write([]byte(conn))
	return int(h.Sum32() % uint32(p))
}

// run makes s.Calls calls on the servers at urls (one per server of the
// cluster, names their server names) with streams of `replicas` replicas,
// and checks the stores afterwards. Flows and workers each get one NATS
// connection per server, as flows and workers spread over a cluster do.
func run(ctx context.Context, urls, names []string, replicas int, s Spec) (Outcome, error) {
	var out Outcome
	admin, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		return out, err
	}
	defer admin.Close()
	ajs, err := jetstream.New(admin)
	if err != nil {
		return out, err
	}
	if err := createStreams(ctx, ajs, replicas, s); err != nil {
		return out, err
	}
	defer deleteStreams(ajs, s)
	if s.Spread && len(names) > 1 {
		if err := spreadLeaders(ctx, admin, ajs, names, s); err != nil {
			return out, err
		}
	}
	if out.Leaders, err = leaders(ctx, ajs, s); err != nil {
		return out, err
	}

	conns := make([]*nats.Conn, 0, 2*len(urls))
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func(url string) (jetstream.JetStream, error) {
		nc, err := nats.Connect(url)
		if err != nil {
			return nil, err
		}
		conns = append(conns, nc)
		return jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(s.Window))
	}
	var flows, workers []jetstream.JetStream
	for _, u := range urls {
		f, err := connect(u)
		if err != nil {
			return out, err
		}
		w, err := connect(u)
		if err != nil {
			return out, err
		}
		flows, workers = append(flows, f), append(workers, w)
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := &tally{acked: make([]atomic.Bool, s.Calls), all: make(chan struct{})}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
		cancel()
	}
	cpu0, cpuOK := serversCPU(s.PIDs)
	start := time.Now()
	for p := range s.Partitions {
		cons, err := ajs.Consumer(ctx, s.callsStream(p), "workers")
		if err != nil {
			return out, err
		}
		perPartition := max(1, s.Workers/s.Partitions)
		for w := range perPartition {
			js := workers[(p*perPartition+w)%len(workers)]
			wg.Go(func() {
				if err := work(rctx, js, cons, p, s, t); err != nil && rctx.Err() == nil {
					fail(err)
				}
			})
		}
	}
	var callDups atomic.Int64
	for f, js := range flows {
		wg.Go(func() {
			if err := produce(rctx, js, f, len(flows), s, &callDups); err != nil && rctx.Err() == nil {
				fail(err)
			}
		})
	}
	select {
	case <-t.all:
		out.Elapsed = time.Since(start)
		if len(s.PIDs) > 0 {
			cpu1, ok := serversCPU(s.PIDs)
			out.ServerCPU, out.ServerCPUOK = cpu1-cpu0, ok && cpuOK
		}
	case <-rctx.Done():
	}
	cancel()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return out, err
	}
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	out.CallsPerSec = float64(s.Calls) / out.Elapsed.Seconds()
	out.ResultDuplicates = t.resultDups.Load()
	out.CallDuplicates = callDups.Load()
	for _, nc := range conns {
		if err := nc.Flush(); err != nil {
			return out, err
		}
	}
	out.Stored, err = check(ctx, ajs, s)
	return out, err
}

// tally counts the calls acknowledged, each once.
type tally struct {
	acked      []atomic.Bool
	done       atomic.Int64
	resultDups atomic.Int64
	all        chan struct{} // closed when every call is acknowledged
}

// ack records call i acknowledged.
func (t *tally) ack(i int) {
	if t.acked[i].CompareAndSwap(false, true) && t.done.Add(1) == int64(len(t.acked)) {
		close(t.all)
	}
}

// produce is one flow: it enqueues the calls i with i % flows == f, each to
// its connection's partition with Nats-Msg-Id = the call id, through async
// publishes (at most s.Window awaiting a PubAck). A publish that fails is
// published again with the same id, as a flow's retry would be.
func produce(ctx context.Context, js jetstream.JetStream, f, flows int, s Spec, dups *atomic.Int64) error {
	payload := []byte(strings.Repeat("c", s.Payload))
	type pending struct {
		msg *nats.Msg
		fut jetstream.PubAckFuture
	}
	acks := make(chan pending, s.Window)
	settled := make(chan error, 1)
	go func() {
		var err error
		for p := range acks {
			select {
			case pa := <-p.fut.Ok():
				if pa != nil && pa.Duplicate {
					dups.Add(1)
				}
			case <-p.fut.Err():
				if rerr := republish(ctx, js, p.msg, dups); rerr != nil && err == nil && ctx.Err() == nil {
					err = rerr
				}
			case <-ctx.Done():
			}
		}
		settled <- err
	}()
	publishErr := func() error {
		for i := f; i < s.Calls; i += flows {
			conn := "conn-" + strconv.Itoa(i%s.Connections)
			part := partitionOf(conn, s.Partitions)
			msg := nats.NewMsg(s.callSubject(part, conn))
			msg.Data = payload
			if s.Variant.CallNoMsgID {
				msg.Header.Set(callIDHeader, s.callID(i))
			} else {
				msg.Header.Set(jetstream.MsgIDHeader, s.callID(i))
			}
			if s.DupEvery > 0 && i%s.DupEvery == 0 {
				// A flow that publishes again after its PubAck was lost:
				// the second publish follows the first's PubAck. Back to
				// back, a cluster may answer the second "duplicate message
				// id is in process" (409) instead.
				if err := republish(ctx, js, msg, dups); err != nil {
					return fmt.Errorf("enqueue call %d: %w", i, err)
				}
			}
			fut, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(stallWait))
			if err != nil {
				return fmt.Errorf("enqueue call %d: %w", i, err)
			}
			select {
			case acks <- pending{msg: msg, fut: fut}:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	}()
	close(acks)
	return errors.Join(publishErr, <-settled)
}

// republish publishes msg again, synchronously, with its Nats-Msg-Id: the
// stream stores it once however often it arrives.
func republish(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, dups *atomic.Int64) error {
	var err error
	for range 5 {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var pa *jetstream.PubAck
		pa, err = js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			if pa.Duplicate {
				dups.Add(1)
			}
			return nil
		}
	}
	return fmt.Errorf("publish to %s: %w", msg.Subject, err)
}

// work is one worker's pull loop on partition p: fetch up to s.Batch
// calls, publish each call's result (Nats-Msg-Id = the call id) through
// the async window, and acknowledge the call once JetStream has stored
// its result, as worker.complete does. No partner is called: the bench
// measures the JetStream path alone.
func work(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, p int, s Spec, t *tally) error {
	if s.Variant.PerCall {
		return workPerCall(ctx, js, cons, p, s, t)
	}
	payload := []byte(strings.Repeat("r", s.Payload))
	v := s.Variant
	// Acks sent without waiting for their reply in the ack loop's own
	// goroutine, or AckSync's on goroutines of their own (v.AckSync).
	var syncAcks sync.WaitGroup
	syncAckSlots := make(chan struct{}, max(1, s.Window))
	type pending struct {
		call   jetstream.Msg
		result *nats.Msg
		index  int
		fut    jetstream.PubAckFuture
	}
	acks := make(chan pending, s.Window)
	settled := make(chan error, 1)
	var syncAckErr atomic.Value
	go func() {
		var err error
		for pd := range acks {
			if pd.fut == nil {
				// Already acked (v.CoreResult): nothing awaits a PubAck.
				t.ack(pd.index)
				continue
			}
			var perr error
			select {
			case pa := <-pd.fut.Ok():
				if pa != nil && pa.Duplicate {
					t.resultDups.Add(1)
				}
			case perr = <-pd.fut.Err():
			case <-ctx.Done():
				continue
			}
			if perr != nil || (s.DupEvery > 0 && pd.index%s.DupEvery == 0) {
				// A failed publish, or the test's second publish of the
				// same result: the stream must keep one.
				var dups atomic.Int64
				if rerr := republish(ctx, js, pd.result, &dups); rerr != nil {
					if err == nil && ctx.Err() == nil {
						err = rerr
					}
					continue
				}
				t.resultDups.Add(dups.Load())
			}
			switch {
			case v.AckBeforeResult:
				// Acked when its result was published, before its PubAck.
			case v.AckSync:
				// AckSync: the server confirms the ack. On a goroutine of
				// its own, at most s.Window at once, so that the
				// round-trip does not serialise the loop.
				select {
				case syncAckSlots <- struct{}{}:
				case <-ctx.Done():
					continue
				}
				syncAcks.Add(1)
				go func(pd pending) {
					defer func() { <-syncAckSlots; syncAcks.Done() }()
					actx, cancel := context.WithTimeout(ctx, 10*time.Second)
					aerr := pd.call.DoubleAck(actx)
					cancel()
					if aerr != nil {
						if ctx.Err() == nil {
							syncAckErr.CompareAndSwap(nil, fmt.Errorf("ack sync: %w", aerr))
						}
						return
					}
					t.ack(pd.index)
				}(pd)
				continue
			default:
				// The real worker acks without waiting for the server's
				// reply (msg.Ack); so does the bench.
				if aerr := pd.call.Ack(); aerr != nil && err == nil && ctx.Err() == nil {
					err = fmt.Errorf("ack: %w", aerr)
				}
			}
			t.ack(pd.index)
		}
		syncAcks.Wait()
		if e, _ := syncAckErr.Load().(error); e != nil && err == nil {
			err = e
		}
		settled <- err
	}()
	loopErr := pullCalls(ctx, cons, s, func() bool { return true }, func(msg jetstream.Msg, id string, i int) error {
		if v.InProgress {
			// What a call held longer than AckWait/3 sends, once.
			if err := msg.InProgress(); err != nil {
				return fmt.Errorf("in progress: %w", err)
			}
		}
		res := resultMsg(s, p, id, payload)
		if v.CoreResult {
			// A reply_to outside the results stream: a core
			// publish, then the ack at once (worker.complete).
			if err := js.Conn().PublishMsg(res); err != nil {
				return fmt.Errorf("publish result: %w", err)
			}
			if err := msg.Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
			select {
			case acks <- pending{call: msg, result: res, index: i}:
			case <-ctx.Done():
				return errStopped
			}
			return nil
		}
		fut, err := js.PublishMsgAsync(res, jetstream.WithStallWait(stallWait))
		if err != nil {
			return fmt.Errorf("publish result: %w", err)
		}
		if v.AckBeforeResult {
			if err := msg.Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
		select {
		case acks <- pending{call: msg, result: res, index: i, fut: fut}:
		case <-ctx.Done():
			return errStopped
		}
		return nil
	})
	close(acks)
	return errors.Join(loopErr, <-settled)
}

// errStopped is what a pullCalls handler returns when ctx ended while it
// waited: the loop ends without an error.
var errStopped = errors.New("stopped")

// pullCalls takes the calls of cons, s.Batch at a time, while ctx lasts
// and more reports true, and hands each to handle with its call id and
// index. A fetch's error or handle's ends it (errStopped without one).
func pullCalls(ctx context.Context, cons jetstream.Consumer, s Spec, more func() bool, handle func(msg jetstream.Msg, id string, i int) error) error {
	for ctx.Err() == nil && more() {
		batch, err := cons.Fetch(s.Batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetch: %w", err)
		}
		for msg := range batch.Messages() {
			id, i, err := callOf(msg, s)
			if err != nil {
				return err
			}
			if err := handle(msg, id, i); errors.Is(err, errStopped) {
				return nil
			} else if err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			return fmt.Errorf("fetch: %w", err)
		}
	}
	return nil
}

// createStreams makes the run's P calls streams (work queue, 2 min
// duplicate window, as MTLSRELAY_CALLS), their consumers "workers"
// (explicit ack, as streams.ConsumerConfig) and P results streams
// (limits, 2 min duplicate window, as MTLSRELAY_RESULTS), file storage.
func createStreams(ctx context.Context, js jetstream.JetStream, replicas int, s Spec) error {
	for p := range s.Partitions {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: s.callsStream(p), Subjects: []string{fmt.Sprintf("sb.%s.calls.%d.*", s.Tag, p)},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: replicas,
			Duplicates: 2 * time.Minute, Discard: jetstream.DiscardOld,
		}); err != nil {
			return fmt.Errorf("create %s: %w", s.callsStream(p), err)
		}
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: s.resultsStream(p), Subjects: []string{fmt.Sprintf("sb.%s.results.%d.*", s.Tag, p)},
			Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: replicas,
			Duplicates: cmp.Or(s.Variant.ResultWindow, 2*time.Minute), MaxAge: time.Hour,
		}); err != nil {
			return fmt.Errorf("create %s: %w", s.resultsStream(p), err)
		}
		if _, err := js.CreateConsumer(ctx, s.callsStream(p), jetstream.ConsumerConfig{
			Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
			MaxAckPending: 10000, DeliverPolicy: jetstream.DeliverAllPolicy, Replicas: replicas,
		}); err != nil {
			return fmt.Errorf("create consumer on %s: %w", s.callsStream(p), err)
		}
	}
	if s.Variant.KV {
		if _, err := js.CreateKeyValue(ctx, stateBucketConfig(s, replicas)); err != nil {
			return fmt.Errorf("create KV bucket %s: %w", s.stateBucket(), err)
		}
	}
	return nil
}

// deleteStreams removes the run's streams, so that runs do not add up on
// the servers' disks and Raft.
func deleteStreams(js jetstream.JetStream, s Spec) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for p := range s.Partitions {
		_ = js.DeleteStream(ctx, s.callsStream(p))
		_ = js.DeleteStream(ctx, s.resultsStream(p))
	}
	if s.Variant.KV {
		_ = js.DeleteKeyValue(ctx, s.stateBucket())
	}
}

// spreadLeaders puts the leader of calls stream p and of its consumer on
// server p mod n, and the leader of results stream p on the next server:
// every server leads about as many busy groups as any other.
func spreadLeaders(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names []string, s Spec) error {
	n := len(names)
	for p := range s.Partitions {
		if err := moveLeader(ctx, nc, js, s.callsStream(p), "", names[p%n]); err != nil {
			return err
		}
		if err := moveLeader(ctx, nc, js, s.callsStream(p), "workers", names[p%n]); err != nil {
			return err
		}
		if err := moveLeader(ctx, nc, js, s.resultsStream(p), "", names[(p+1)%n]); err != nil {
			return err
		}
	}
	return nil
}

// leaders reports the run's Raft leaders.
func leaders(ctx context.Context, js jetstream.JetStream, s Spec) ([]Leader, error) {
	var out []Leader
	for p := range s.Partitions {
		for _, l := range []Leader{{Stream: s.callsStream(p)}, {Stream: s.callsStream(p), Consumer: "workers"}, {Stream: s.resultsStream(p)}} {
			srv, err := leaderOf(ctx, js, l.Stream, l.Consumer)
			if err != nil {
				return nil, err
			}
			l.Server = srv
			out = append(out, l)
		}
	}
	return out, nil
}

// check verifies the stores after a run: every calls stream empty and its
// consumer with nothing pending or unacknowledged (every call acked, the
// work queue removed it), and the results streams holding exactly
// s.Calls results; with s.CheckEach, exactly one result per call id, in
// the partition of its connection. It returns the results stored.
func check(ctx context.Context, js jetstream.JetStream, s Spec) (uint64, error) {
	deadline := time.Now().Add(30 * time.Second)
	for p := range s.Partitions {
		for {
			st, err := js.Stream(ctx, s.callsStream(p))
			if err != nil {
				return 0, err
			}
			ci, err := js.Consumer(ctx, s.callsStream(p), "workers")
			if err != nil {
				return 0, err
			}
			cinfo, err := ci.Info(ctx)
			if err != nil {
				return 0, err
			}
			msgs := st.CachedInfo().State.Msgs
			if msgs == 0 && cinfo.NumAckPending == 0 && cinfo.NumPending == 0 {
				break
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("%s still holds %d calls (%d unacknowledged, %d undelivered) 30s after the last ack",
					s.callsStream(p), msgs, cinfo.NumAckPending, cinfo.NumPending)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var stored uint64
	seen := make(map[string]int)
	for p := range s.Partitions {
		st, err := js.Stream(ctx, s.resultsStream(p))
		if err != nil {
			return 0, err
		}
		state := st.CachedInfo().State
		stored += state.Msgs
		if !s.CheckEach {
			continue
		}
		for seq := state.FirstSeq; seq <= state.LastSeq && state.Msgs > 0; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("read %s seq %d: %w", s.resultsStream(p), seq, err)
			}
			id := m.Header.Get(jetstream.MsgIDHeader)
			if id == "" {
				id = m.Header.Get(callIDHeader)
			}
			if want := s.resultSubject(p, id); m.Subject != want {
				return 0, fmt.Errorf("result %q stored on %s, want %s", id, m.Subject, want)
			}
			seen[id]++
		}
	}
	if want := s.Variant.storedWant(s.Calls); stored != want {
		return stored, fmt.Errorf("the results streams hold %d results for %d calls, want %d", stored, s.Calls, want)
	}
	if s.CheckEach && !s.Variant.CoreResult {
		for i := range s.Calls {
			id := s.callID(i)
			conn := "conn-" + strconv.Itoa(i%s.Connections)
			if n := seen[id]; n != 1 {
				return stored, fmt.Errorf("call %s (%s, partition %d) has %d stored results, want 1", id, conn, partitionOf(conn, s.Partitions), n)
			}
		}
		if len(seen) != s.Calls {
			return stored, fmt.Errorf("%d distinct result ids stored for %d calls", len(seen), s.Calls)
		}
	}
	return stored, nil
}

// stallWait is how long an async publish waits for room in a full window:
// long, since a full window is the back-pressure the bench wants (nats.go's
// default of 200 ms fails the publish on a busy 2-CPU machine instead).
const stallWait = 30 * time.Second
