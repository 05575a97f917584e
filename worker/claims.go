package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Who may act on a forwarded call. The state bucket keeps, under
// f.<origin> (origin names the message the call was first taken from),
// which delivery holds the call:
//
//	0                    the message a flow published (a first delivery
//	                     that runs the call records nothing)
//	s:<seq>              the copy at <seq> of MTLSRELAY_ZONES
//	h:<nonce>:<holder>   <holder> is handing the call to the copy that
//	                     carries <nonce> (header Mtlsrelay-Handoff)
//
// A holder hands off before it publishes the copy; the copy takes over by
// compare-and-set when it is taken. Until then the holder's redeliveries
// publish the copy again with the same nonce (never run the call), so a
// copy lost or never stored is made again, and one stored twice (past the
// duplicate window) runs once: the second finds the call taken. Every
// write is a create or a compare-and-set.

// claimKV is the part of jetstream.KeyValue claims use beyond stateKV.
type claimKV interface {
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
}

func claimKey(origin string) string { return "f." + origin }

// originalHolder is the holder id of the message a flow published.
const originalHolder = "0"

// holding is what a delivery may do with its call.
type holding int

const (
	// holdRun: the delivery holds the call: it may run or forward it.
	holdRun holding = iota
	// holdReforward: the delivery handed the call off; it publishes the
	// copy again, with the nonce, and runs nothing.
	holdReforward
	// holdDrop: another delivery holds the call; this one is acknowledged.
	holdDrop
)

// errNotHolder is handOff's error when the delivery does not hold the call.
var errNotHolder = errors.New("another delivery holds the call")

// hold decides what delivery me (carrying nonce, "" for none) may do with
// the call of origin. With record false a delivery finding no entry holds
// the call without writing one (the original message on the fast path).
func (s *stateStore) hold(ctx context.Context, origin, me, nonce string, record bool) (holding, string, error) {
	ckv, ok := s.kv.(claimKV)
	if !ok {
		return holdRun, "", nil
	}
	key := claimKey(origin)
	for range 4 {
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if !record {
				return holdRun, "", nil
			}
			if _, err := ckv.Create(ctx, key, []byte(me)); errors.Is(err, jetstream.ErrKeyExists) {
				continue
			} else if err != nil {
				return 0, "", err
			}
			return holdRun, "", nil
		}
		if err != nil {
			return 0, "", err
		}
		v := string(e.Value())
		if v == me {
			return holdRun, "", nil
		}
		n, from, handing := parseHandoff(v)
		switch {
		case handing && nonce != "" && nonce == n:
			if _, err := ckv.Update(ctx, key, []byte(me), e.Revision()); err != nil {
				if isWrongRevision(err) {
					continue
				}
				return 0, "", err
			}
			return holdRun, "", nil
		case handing && from == me:
			return holdReforward, n, nil
		}
		return holdDrop, "", nil
	}
	return 0, "", fmt.Errorf("the claim %s keeps changing", key)
}

// handOff records that holder me hands the call of origin to a new copy,
// and returns the nonce the copy carries. A holder handing off again (its
// redelivery) gets its earlier nonce back.
func (s *stateStore) handOff(ctx context.Context, origin, me string) (string, error) {
	ckv, ok := s.kv.(claimKV)
	if !ok {
		return nuid.Next(), nil
	}
	key := claimKey(origin)
	for range 4 {
		nonce := nuid.Next()
		value := []byte("h:" + nonce + ":" + me)
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := ckv.Create(ctx, key, value); errors.Is(err, jetstream.ErrKeyExists) {
				continue
			} else if err != nil {
				return "", err
			}
			return nonce, nil
		}
		if err != nil {
			return "", err
		}
		v := string(e.Value())
		if n, from, handing := parseHandoff(v); handing && from == me {
			return n, nil
		}
		if v != me {
			return "", errNotHolder
		}
		if _, err := ckv.Update(ctx, key, value, e.Revision()); err != nil {
			if isWrongRevision(err) {
				continue
			}
			return "", err
		}
		return nonce, nil
	}
	return "", fmt.Errorf("the claim %s keeps changing", key)
}

// parseHandoff splits h:<nonce>:<holder>.
func parseHandoff(v string) (nonce, from string, ok bool) {
	rest, ok := strings.CutPrefix(v, "h:")
	if !ok {
		return "", "", false
	}
	nonce, from, ok = strings.Cut(rest, ":")
	return nonce, from, ok
}

// isWrongRevision reports whether err is a compare-and-set that lost.
func isWrongRevision(err error) bool { return errors.Is(err, jetstream.ErrKeyRevisionMismatch) }
