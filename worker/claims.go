package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Claims of forwarded calls: the state bucket keeps, for each call a
// worker forwarded to a zone, the MTLSRELAY_ZONES sequence of the copy
// that owns it, under f.<origin> (origin names the message the call was
// first taken from). A forward past the duplicate window may store a
// second copy; the claim lets one run. A redelivery of a forwarded call
// in the stream it came from finds the key and does not run it either.

// claimKV is the part of jetstream.KeyValue claims use beyond stateKV.
type claimKV interface {
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
}

func claimKey(origin string) string { return "f." + origin }

// ownerOf reads the owner of origin: its sequence and the entry's
// revision, or 0 and found false.
func (s *stateStore) ownerOf(ctx context.Context, origin string) (owner, revision uint64, found bool, err error) {
	e, err := s.kv.Get(ctx, claimKey(origin))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	owner, err = strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, 0, false, fmt.Errorf("claim %s is not a sequence", claimKey(origin))
	}
	return owner, e.Revision(), true, nil
}

// claim makes seq the owner of origin unless another copy owns it, and
// returns the owner.
func (s *stateStore) claim(ctx context.Context, origin string, seq uint64) (uint64, error) {
	ckv, ok := s.kv.(claimKV)
	if !ok {
		return seq, nil
	}
	for range 3 {
		owner, _, found, err := s.ownerOf(ctx, origin)
		if err != nil {
			return 0, err
		}
		if found {
			return owner, nil
		}
		if _, err := ckv.Create(ctx, claimKey(origin), []byte(strconv.FormatUint(seq, 10))); err == nil {
			return seq, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, err
		}
	}
	return 0, fmt.Errorf("claim %s keeps changing", claimKey(origin))
}

// setOwner records the copy stored at seq as the owner of origin, after a
// forward. A delivery that was itself a forwarded copy (fromZone) passes
// its ownership (held at mine) on; a forward from the stream the flow
// published to leaves an owner recorded already in place: that copy
// exists, and this one is a second.
func (s *stateStore) setOwner(ctx context.Context, origin string, seq uint64, fromZone bool, mine uint64) error {
	ckv, ok := s.kv.(claimKV)
	if !ok {
		return nil
	}
	value := []byte(strconv.FormatUint(seq, 10))
	owner, rev, found, err := s.ownerOf(ctx, origin)
	switch {
	case err != nil:
		return err
	case !found:
		_, err = ckv.Create(ctx, claimKey(origin), value)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil // a zone's worker claimed the copy first
		}
		return err
	case fromZone && owner == mine:
		_, err = ckv.Update(ctx, claimKey(origin), value, rev)
		return err
	}
	return nil
}

// forwarded reports whether the call first taken from origin was
// forwarded to a zone.
func (s *stateStore) forwarded(ctx context.Context, origin string) (bool, error) {
	if _, ok := s.kv.(claimKV); !ok {
		return false, nil
	}
	_, _, found, err := s.ownerOf(ctx, origin)
	return found, err
}
