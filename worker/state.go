package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StateBucket is the KV bucket where workers record what they know of a
// call between deliveries: attempts made, and whether a non-idempotent
// request is in flight or done. It is bookkeeping, not part of the wire
// contract, and only the slow paths touch it: a call delivered once and
// completed at its first attempt is never written there unless it is
// non-idempotent.
const StateBucket = "mtlsrelay_call_state"

// callState is what the state bucket holds for a call id.
type callState struct {
	// Attempts counts the attempts made (not deliveries: a call handed back
	// because its connection was saturated made no attempt).
	Attempts int `json:"attempts"`
	// Inflight is set while a non-idempotent request may be on its way to
	// the partner; a redelivery that finds it set knows a worker died
	// mid-request and must not repeat it.
	Inflight bool `json:"inflight,omitempty"`
	// Done is set once the final result of a non-idempotent call was
	// published; a redelivery that finds it set only acknowledges.
	Done bool `json:"done,omitempty"`
	// Result is the final result of a delivery that could not publish it
	// (no stream answered for as long as it tried): the redelivery
	// publishes it instead of calling the partner again.
	Result json.RawMessage `json:"result,omitempty"`
	// ResultSeq is the calls-stream sequence of the call Result belongs
	// to: a later call that uses the same id does not get it.
	ResultSeq uint64 `json:"result_seq,omitempty"`
	// Worker names the worker that wrote the state.
	Worker string `json:"worker,omitempty"`
}

type stateStore struct {
	kv     stateKV
	worker string
}

// stateKV is the part of jetstream.KeyValue the state store uses.
type stateKV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
}

// openState creates or opens the state bucket. Entries live as long as
// results do: a call is not retried for longer than that.
func openState(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration, worker string) (*stateStore, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      StateBucket,
		Description: "mtlsrelay per-call attempts and in-flight markers",
		TTL:         ttl,
		History:     1,
		Replicas:    max(replicas, 1),
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update KV bucket %s: %w", StateBucket, err)
	}
	return &stateStore{kv: kv, worker: worker}, nil
}

// stateKey maps a call id to a KV key, one to one. Ids are
// [A-Za-z0-9._:-]; KV keys allow no ':', which is escaped as "=3A" ('='
// never occurs in an id). A '.' separates tokens of a key, and a key may
// have no empty token: an id with "..", or that starts or ends with '.',
// has its dots escaped as "=2E" too. Other ids keep their dots, so the
// keys that earlier workers wrote stay where they were.
//
// A tenant's call is keyed t.<tenant>.<id>, so two tenants' calls with one
// id never share a state (tenant names have no '.').
func stateKey(tenant, id string) string {
	key := strings.ReplaceAll(id, ":", "=3A")
	if strings.Contains(key, "..") || strings.HasPrefix(key, ".") || strings.HasSuffix(key, ".") {
		key = strings.ReplaceAll(key, ".", "=2E")
	}
	if tenant != "" {
		return "t." + tenant + "." + key
	}
	return "c." + key
}

// get returns the state of call id, or nil when none is recorded.
func (s *stateStore) get(ctx context.Context, tenant, id string) (*callState, error) {
	e, err := s.kv.Get(ctx, stateKey(tenant, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st callState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, fmt.Errorf("state of call %s is not JSON: %w", id, err)
	}
	return &st, nil
}

// put records st for call id and waits for JetStream's acknowledgement.
func (s *stateStore) put(ctx context.Context, tenant, id string, st callState) error {
	st.Worker = s.worker
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, stateKey(tenant, id), b)
	return err
}
