package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
)

// The fakes below stand in for JetStream around one delivery of a durable
// call, so the decisions of handleDurable, recall, complete, finish and
// settle run without NATS. Integration tests run the same paths against
// real servers (TestLeaderLoss, TestResultWaitsForAStream).

// fakeMsg is one delivery of a call; it records what the worker did with it.
type fakeMsg struct {
	data  []byte
	meta  jetstream.MsgMetadata
	mu    sync.Mutex
	acts  []string
	delay time.Duration
}

func (m *fakeMsg) record(a string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acts = append(m.acts, a)
	return nil
}

func (m *fakeMsg) actions() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.acts...)
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) { meta := m.meta; return &meta, nil }
func (m *fakeMsg) Data() []byte                              { return m.data }
func (m *fakeMsg) Headers() nats.Header                      { return nats.Header{} }
func (m *fakeMsg) Subject() string                           { return "mtlsrelay.calls.a" }
func (m *fakeMsg) Reply() string                             { return "" }
func (m *fakeMsg) Ack() error                                { return m.record("ack") }
func (m *fakeMsg) DoubleAck(context.Context) error           { return m.record("ack") }
func (m *fakeMsg) Nak() error                                { return m.record("nak") }
func (m *fakeMsg) InProgress() error                         { return m.record("in-progress") }
func (m *fakeMsg) Term() error                               { return m.record("term") }
func (m *fakeMsg) TermWithReason(string) error               { return m.record("term") }
func (m *fakeMsg) NakWithDelay(d time.Duration) error        { m.delay = d; return m.record("nak") }
func (m *fakeMsg) String() string                            { return fmt.Sprint(m.actions()) }
func (m *fakeMsg) only(act string) bool                      { a := m.actions(); return len(a) == 1 && a[0] == act }
func (m *fakeMsg) acked() bool                               { return m.only("ack") }
func (m *fakeMsg) terminated() bool                          { return m.only("term") }
func (m *fakeMsg) delivery(n uint64) *fakeMsg                { m.meta.NumDelivered = n; return m }
func (m *fakeMsg) seq(s uint64) *fakeMsg                     { m.meta.Sequence.Stream = s; return m }
func (m *fakeMsg) enqueuedAt(t time.Time) *fakeMsg           { m.meta.Timestamp = t; return m }
func newMsg(data string) *fakeMsg {
	m := &fakeMsg{data: []byte(data)}
	return m.delivery(1).seq(7).enqueuedAt(time.Now())
}
func (m *fakeMsg) isHeld(w *Worker) bool {
	w.held.mu.Lock()
	defer w.held.mu.Unlock()
	_, ok := w.held.held[m]
	return ok
}

// fakeStore is a results stream, a dead-letter stream and a KV bucket in
// one: publishes answer with the errors scripted for their subject prefix,
// then are stored.
type fakeStore struct {
	mu      sync.Mutex
	fail    map[string][]error // subject prefix -> errors to answer, in turn
	stored  map[string][]*nats.Msg
	kv      map[string][]byte
	kvFails bool
}

func newFakeStore() *fakeStore {
	return &fakeStore{fail: map[string][]error{}, stored: map[string][]*nats.Msg{}, kv: map[string][]byte{}}
}

func (s *fakeStore) PublishMsg(_ context.Context, msg *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for prefix, errs := range s.fail {
		if strings.HasPrefix(msg.Subject, prefix) && len(errs) > 0 {
			err := errs[0]
			if len(errs) > 1 || !errors.Is(err, errForever) {
				s.fail[prefix] = errs[1:]
			}
			return nil, err
		}
	}
	dup := false
	for _, m := range s.stored[msg.Subject] {
		dup = dup || m.Header.Get(jobs.HeaderMsgID) == msg.Header.Get(jobs.HeaderMsgID)
	}
	if !dup {
		s.stored[msg.Subject] = append(s.stored[msg.Subject], msg)
	}
	return &jetstream.PubAck{Duplicate: dup}, nil
}

// errForever, scripted last, keeps answering with the error before it.
var errForever = errors.New("forever")

// Publish is the result window: it publishes at once and reports.
func (s *fakeStore) Publish(msg *nats.Msg, done func(error)) {
	_, err := s.PublishMsg(context.Background(), msg)
	done(err)
}

func (s *fakeStore) GetLastMsgForSubject(_ context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := s.stored[subject]
	if len(ms) == 0 {
		return nil, jetstream.ErrMsgNotFound
	}
	m := ms[len(ms)-1]
	return &jetstream.RawStreamMsg{Subject: subject, Header: m.Header, Data: m.Data, Time: time.Now()}, nil
}

func (s *fakeStore) storedOn(subject string) []*nats.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*nats.Msg(nil), s.stored[subject]...)
}

type kvEntry struct {
	jetstream.KeyValueEntry
	value []byte
}

func (e kvEntry) Value() []byte { return e.value }

func (s *fakeStore) Get(_ context.Context, key string) (jetstream.KeyValueEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[key]
	if !ok {
		return nil, jetstream.ErrKeyNotFound
	}
	return kvEntry{value: v}, nil
}

func (s *fakeStore) Put(_ context.Context, key string, value []byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kvFails {
		return 0, nats.ErrNoResponders
	}
	s.kv[key] = value
	return 1, nil
}

func (s *fakeStore) state(t *testing.T, id string) *callState {
	t.Helper()
	st, err := (&stateStore{kv: s}).get(context.Background(), "", id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// lifecycleWorker is a testWorker whose JetStream is store.
func lifecycleWorker(t *testing.T, ex executor, store *fakeStore) *Worker {
	t.Helper()
	w := testWorker(t, ex, `  a: {base_url: "https://partner.example/", profile: p}`)
	w.pub, w.results, w.resultsS = store, store, store
	w.state = &stateStore{kv: store, worker: "unit"}
	w.held = newHeldCalls()
	w.callCtx = context.Background()
	w.patience = 50 * time.Millisecond
	return w
}

const replyTo = "mtlsrelay.results.flow.c1"

// What one delivery of a durable call ends in, for each way its result can
// fare. "ok" is the result stored and the call acknowledged; every path
// ends the call exactly once (ack, nak or term) and leaves it unheld.
func TestDeliveryEnds(t *testing.T) {
	get := `{"id":"c1","connection":"a","path":"x","reply_to":"` + replyTo + `"}`
	post := `{"id":"c1","connection":"a","method":"POST","path":"x","reply_to":"` + replyTo + `"}`
	ok := func(call *jobs.Call) outbound.Outcome { return okOutcome(call) }
	big := func(call *jobs.Call) outbound.Outcome {
		o := okOutcome(call)
		o.Result.Body = strings.Repeat("x", 1000)
		return o
	}

	t.Run("ok/stored-then-acked", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: ok}
		w := lifecycleWorker(t, ex, store)
		m := newMsg(get)
		w.handleDurable(m)
		w.inflight.Wait()
		if !m.acked() || len(store.storedOn(replyTo)) != 1 || ex.count() != 1 || m.isHeld(w) {
			t.Fatalf("actions %v, stored %d, partner calls %d", m, len(store.storedOn(replyTo)), ex.count())
		}
	})
	t.Run("ok/no-responders-is-not-success", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: ok}
		// What a results stream without a leader answers, then a new leader.
		store.fail["mtlsrelay.results."] = []error{nats.ErrNoResponders, jetstream.ErrNoStreamResponse, nats.ErrNoResponders}
		w := lifecycleWorker(t, ex, store)
		w.patience = 10 * time.Second
		m := newMsg(get)
		w.handleDurable(m)
		w.inflight.Wait()
		if !m.acked() || len(store.storedOn(replyTo)) != 1 || ex.count() != 1 {
			t.Fatalf("actions %v, stored %d, partner calls %d; want the result stored, then the ack", m, len(store.storedOn(replyTo)), ex.count())
		}
	})
	t.Run("handback/no-stream-answers-result-kept", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: ok}
		store.fail["mtlsrelay.results."] = []error{nats.ErrNoResponders, errForever}
		w := lifecycleWorker(t, ex, store)
		m := newMsg(get)
		w.handleDurable(m)
		w.inflight.Wait()
		st := store.state(t, "c1")
		if !m.only("nak") || len(store.storedOn(replyTo)) != 0 || st == nil || st.Result == nil || st.ResultSeq != 7 || m.isHeld(w) {
			t.Fatalf("actions %v, state %+v; want the call handed back, its result kept for seq 7", m, st)
		}

		// The redelivery publishes the kept result: no second partner call.
		store.fail = map[string][]error{}
		again := newMsg(get).delivery(2)
		w.handleDurable(again)
		w.inflight.Wait()
		if !again.acked() || ex.count() != 1 || len(store.storedOn(replyTo)) != 1 {
			t.Fatalf("redelivery: actions %v, partner calls %d, stored %d; want the kept result stored and acked", again, ex.count(), len(store.storedOn(replyTo)))
		}
	})
	t.Run("ok/kept-result-not-given-to-a-later-call", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: ok}
		w := lifecycleWorker(t, ex, store)
		old, _ := jobs.EncodeResult(&jobs.Result{ID: "c1", OK: true, Status: 299})
		if err := w.state.put(context.Background(), "", "c1", callState{Attempts: 1, Result: old, ResultSeq: 3}); err != nil {
			t.Fatal(err)
		}
		m := newMsg(get).delivery(2) // sequence 7, not 3
		w.handleDurable(m)
		w.inflight.Wait()
		r, _ := jobs.DecodeResult(store.storedOn(replyTo)[0].Data)
		if ex.count() != 1 || r.Status == 299 || !m.acked() {
			t.Fatalf("partner calls %d, stored status %d; a later call with the same id must not get the kept result", ex.count(), r.Status)
		}
	})
	t.Run("ok/redelivery-finds-stored-result", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: ok}
		w := lifecycleWorker(t, ex, store)
		first := newMsg(get)
		w.handleDurable(first)
		w.inflight.Wait()
		// The ack was lost in a leader election: JetStream delivers again.
		again := newMsg(get).delivery(2)
		w.handleDurable(again)
		w.inflight.Wait()
		if !again.acked() || ex.count() != 1 || len(store.storedOn(replyTo)) != 1 {
			t.Fatalf("redelivery: actions %v, partner calls %d, stored %d; want an ack without a second call", again, ex.count(), len(store.storedOn(replyTo)))
		}
	})
	t.Run("ok/non-idempotent-in-flight-is-not-repeated", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: ok}
		w := lifecycleWorker(t, ex, store)
		if err := w.state.put(context.Background(), "", "c1", callState{Attempts: 0, Inflight: true}); err != nil {
			t.Fatal(err)
		}
		m := newMsg(post).delivery(2)
		w.handleDurable(m)
		w.inflight.Wait()
		r, _ := jobs.DecodeResult(store.storedOn(replyTo)[0].Data)
		if ex.count() != 0 || r.Error == nil || r.Error.Code != jobs.CodeOutcomeUnknown || !m.acked() {
			t.Fatalf("partner calls %d, result %+v; want outcome_unknown without a call", ex.count(), r.Error)
		}
		if st := store.state(t, "c1"); st == nil || !st.Done {
			t.Errorf("state %+v; want the call recorded as done", st)
		}
	})
	t.Run("ok/too-large-for-nats-ends-the-call", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: big}
		store.fail["mtlsrelay.results."] = []error{nats.ErrMaxPayload}
		w := lifecycleWorker(t, ex, store)
		m := newMsg(get)
		w.handleDurable(m)
		w.inflight.Wait()
		stored := store.storedOn(replyTo)
		if !m.acked() || len(stored) != 1 || ex.count() != 1 {
			t.Fatalf("actions %v, stored %d; want one replacement result and the ack", m, len(stored))
		}
		r, _ := jobs.DecodeResult(stored[0].Data)
		dead := store.storedOn("mtlsrelay.dead.a")
		if r.Error == nil || r.Error.Code != jobs.CodeResponseTooLarge || r.Body != "" || len(dead) != 1 {
			t.Fatalf("result %+v, dead letters %d; want response_too_large without the body, and a dead letter", r.Error, len(dead))
		}
	})
	t.Run("handback/dead-letter-not-stored", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: failOutcome(jobs.CodeServerCertUntrusted, false)}
		store.fail["mtlsrelay.dead."] = []error{nats.ErrNoResponders, errForever}
		w := lifecycleWorker(t, ex, store)
		m := newMsg(get)
		w.handleDurable(m)
		w.inflight.Wait()
		st := store.state(t, "c1")
		if !m.only("nak") || len(store.storedOn(replyTo)) != 1 || st == nil || st.Result == nil {
			t.Fatalf("actions %v, state %+v; want the result stored, the call handed back with its result kept", m, st)
		}
		store.fail = map[string][]error{}
		again := newMsg(get).delivery(2)
		w.handleDurable(again)
		w.inflight.Wait()
		if !again.acked() || ex.count() != 1 || len(store.storedOn("mtlsrelay.dead.a")) != 1 || len(store.storedOn(replyTo)) != 1 {
			t.Fatalf("redelivery: actions %v, partner calls %d, dead letters %d, results %d",
				again, ex.count(), len(store.storedOn("mtlsrelay.dead.a")), len(store.storedOn(replyTo)))
		}
	})
	t.Run("term/malformed-call-dead-lettered", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: ok}
		w := lifecycleWorker(t, ex, store)
		m := newMsg(`{"id":"c1","connection":"a","reply_to":"` + replyTo + `","timeout_ms":"soon"}`)
		w.handleDurable(m)
		if !m.terminated() || ex.count() != 0 || len(store.storedOn("mtlsrelay.dead.a")) != 1 || m.isHeld(w) {
			t.Fatalf("actions %v, dead letters %d", m, len(store.storedOn("mtlsrelay.dead.a")))
		}
	})
	t.Run("handback/rejection-result-not-stored", func(t *testing.T) {
		store, ex := newFakeStore(), &fakeExecutor{answer: ok}
		store.fail["mtlsrelay.results."] = []error{nats.ErrNoResponders, errForever}
		w := lifecycleWorker(t, ex, store)
		// It decodes, so its rejection has a reply_to to go to.
		m := newMsg(`{"id":"c1","connection":"a","reply_to":"` + replyTo + `","max_attempts":1000}`)
		w.handleDurable(m)
		if !m.only("nak") || len(store.storedOn("mtlsrelay.dead.a")) != 0 {
			t.Fatalf("actions %v; a call whose rejection cannot be stored must come back, not be terminated", m)
		}
	})
}
