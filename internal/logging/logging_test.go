package logging

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/testutil"
)

// syncBuffer is safe for the flusher's goroutine.
type syncBuffer = testutil.SyncBuffer

// Info lines wait for the flush; a warning writes itself and what waited
// before it at once; Close writes the rest.
func TestBufferedWarningsFlushAtOnce(t *testing.T) {
	var out syncBuffer
	b := newBuffered(&out, time.Hour)
	log, err := New(b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("first")
	if got := out.String(); got != "" {
		t.Fatalf("an info line was written before any flush: %q", got)
	}
	log.Warn().Msg("second")
	got := out.String()
	if !strings.Contains(got, `"first"`) || !strings.Contains(got, `"second"`) || strings.Index(got, "first") > strings.Index(got, "second") {
		t.Fatalf("after a warning the output is %q; want both lines, in order", got)
	}
	log.Info().Msg("third")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, `"third"`) {
		t.Fatalf("Close did not write the waiting line: %q", got)
	}
}

// The flusher writes waiting lines within its interval, without a warning
// or Close.
func TestBufferedFlushesOnItsOwn(t *testing.T) {
	var out syncBuffer
	b := newBuffered(&out, 10*time.Millisecond)
	defer b.Close()
	log, err := New(b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("waiting")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "waiting") {
		if time.Now().After(deadline) {
			t.Fatal("the line was never flushed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Open buffers JSON to a file that is not a terminal: nothing reaches the
// file before a flush, everything by the close function.
func TestOpenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	log, closeLog, err := open(f, "debug", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug().Msg("line")
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Fatalf("a buffered line reached the file before any flush: %q", b)
	}
	for range 999 {
		log.Debug().Msg("line")
	}
	if err := closeLog(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 1000 {
		t.Fatalf("%d lines in the file; want 1000", n)
	}
	if _, _, err := Open(f, "loud", "json"); err == nil {
		t.Fatal("an unknown level was accepted")
	}
	var _ zerolog.LevelWriter = (*buffered)(nil)
}

// writes records each Write it is given.
type writes struct {
	mu    sync.Mutex
	calls [][]byte
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, append([]byte(nil), p...))
	return len(p), nil
}

// Each write the buffer makes holds whole lines, so that processes
// appending to one file do not cut each other's lines; a line longer than
// the buffer is written whole, in its place.
func TestBufferedWritesWholeLines(t *testing.T) {
	out := &writes{}
	b := newBuffered(out, time.Hour)
	log, err := New(b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		log.Info().Int("i", i).Msg("a line of a hundred bytes or so, for the buffer to fill")
		if i == 1000 {
			log.Info().Str("long", strings.Repeat("x", 70<<10)).Msg("longer than the buffer")
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for i, w := range out.calls {
		if len(w) == 0 || w[len(w)-1] != '\n' {
			t.Fatalf("write %d of %d ends mid-line: ...%q", i, len(out.calls), w[max(0, len(w)-40):])
		}
		all.Write(w)
	}
	if len(out.calls) < 3 {
		t.Fatalf("%d writes for about 270 KiB: the buffer never filled", len(out.calls))
	}
	lines := strings.Split(strings.TrimSuffix(all.String(), "\n"), "\n")
	if len(lines) != 2001 || !strings.Contains(lines[1001], "longer than the buffer") || !strings.Contains(lines[1002], `"i":1001`) {
		t.Fatalf("%d lines, or out of order around the long one", len(lines))
	}
}

// Console output, for a person, is written line by line: a warning must
// not wait, and ConsoleWriter does not pass levels on.
func TestOpenConsoleUnbuffered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	log, closeLog, err := open(f, "info", "console", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer closeLog()
	log.Warn().Msg("now")
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "now") {
		t.Fatalf("a console warning waited: %q", b)
	}
}

// failOnce fails its first write.
type failOnce struct {
	syncBuffer
	failed bool
}

func (f *failOnce) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, errors.New("disk full")
	}
	return f.syncBuffer.Write(p)
}

// One failed write loses what waited, not every later line; after Close
// lines are written at once.
func TestBufferedRecoversAndWritesThroughAfterClose(t *testing.T) {
	out := &failOnce{}
	b := newBuffered(out, time.Hour)
	log, err := New(b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Warn().Msg("lost")
	log.Warn().Msg("kept")
	if got := out.String(); strings.Contains(got, "lost") || !strings.Contains(got, "kept") {
		t.Fatalf("after one failed write the output is %q; want the second line only", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("late")
	if got := out.String(); !strings.Contains(got, "late") {
		t.Fatalf("a line after Close was not written: %q", got)
	}
	// A line longer than the buffer whose write fails does not silence
	// the lines after it.
	out.failed = false
	log.Warn().Str("long", strings.Repeat("x", 70<<10)).Msg("fails")
	log.Error().Msg("after the failure")
	if got := out.String(); !strings.Contains(got, "after the failure") {
		t.Fatal("a failed long write silenced the lines after it")
	}
}
