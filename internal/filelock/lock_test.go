//go:build unix

package filelock

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// A second Lock on the same path waits until the first is released.
func TestLockExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	unlock, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	var second atomic.Bool
	done := make(chan struct{})
	go func() {
		u, err := Lock(path)
		if err != nil {
			t.Error(err)
		} else {
			second.Store(true)
			u()
		}
		close(done)
	}()
	time.Sleep(100 * time.Millisecond)
	if second.Load() {
		t.Fatal("the second Lock did not wait for the first")
	}
	unlock()
	<-done
	if !second.Load() {
		t.Fatal("the second Lock never got the lock")
	}
}
