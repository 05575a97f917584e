// Package logging builds the zerolog logger of mtlsrelay's commands: JSON by
// default, human-readable console output on a terminal.
package logging

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// New returns a logger writing to out. format is "json", "console" or
// "auto"/"" (console when out is a terminal). level is a zerolog level name;
// "" means info.
func New(out io.Writer, level, format string) (zerolog.Logger, error) {
	lvl := zerolog.InfoLevel
	if level != "" {
		l, err := zerolog.ParseLevel(level)
		if err != nil {
			return zerolog.Nop(), fmt.Errorf("log level %q: use trace, debug, info, warn or error", level)
		}
		lvl = l
	}
	switch format {
	case "", "auto":
		if f, ok := out.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
		}
	case "console":
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly, NoColor: true}
	case "json":
	default:
		return zerolog.Nop(), fmt.Errorf("log format %q: use json, console or auto", format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

// FlushInterval is how long a line of a buffered logger (Open) may wait
// before it is written: at most this much is lost when the process is
// killed outright.
const FlushInterval = 100 * time.Millisecond

// Open returns New's logger on f and a function that writes what waits and
// stops the flushing. JSON output (json, or auto on what is not a
// terminal) to a file that is not a terminal is buffered: a worker logs a line per call, and a write(2) per line cost
// about 4% of its CPU. Lines are written every FlushInterval, when the
// buffer fills, and at once for warnings and worse, which also write
// whatever waited before them. Console output, meant for a person, is not
// buffered.
func Open(f *os.File, level, format string) (zerolog.Logger, func() error, error) {
	return open(f, level, format, FlushInterval)
}

func open(f *os.File, level, format string, every time.Duration) (zerolog.Logger, func() error, error) {
	json := format == "json" || format == "" || format == "auto"
	if !json || isatty.IsTerminal(f.Fd()) {
		log, err := New(f, level, format)
		return log, func() error { return nil }, err
	}
	b := newBuffered(f, every)
	log, err := New(b, level, "json")
	if err != nil {
		b.Close()
		return log, func() error { return nil }, err
	}
	return log, b.Close, nil
}

// buffered is a zerolog.LevelWriter that holds info and lower lines for up
// to a flush interval. After Close it writes through.
type buffered struct {
	mu     sync.Mutex
	out    io.Writer
	w      *bufio.Writer
	closed bool
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func newBuffered(out io.Writer, every time.Duration) *buffered {
	b := &buffered{out: out, w: bufio.NewWriterSize(out, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.mu.Lock()
				_ = b.flushLocked()
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *buffered) Write(p []byte) (int, error) {
	return b.WriteLevel(zerolog.NoLevel, p)
}

// WriteLevel writes p, and everything before it at once for a warning or
// worse (or once closed).
func (b *buffered) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ferr error
	if b.w.Available() < len(p) && b.w.Buffered() > 0 {
		// Whole lines per write: another process may append to the same
		// file. A failed flush loses what waited, not this line.
		ferr = b.flushLocked()
	}
	n, err := b.w.Write(p)
	if err != nil {
		// bufio keeps a write's error for good: start again.
		b.w.Reset(b.out)
	} else if b.closed || (l >= zerolog.WarnLevel && l != zerolog.NoLevel) {
		err = b.flushLocked()
	}
	return n, errors.Join(ferr, err)
}

// flushLocked writes what waits. A failed write is not sticky: the
// buffer starts again empty, so one failure loses what waited (a write
// that stopped partway may leave a line cut short), not every later line.
func (b *buffered) flushLocked() error {
	err := b.w.Flush()
	if err != nil {
		b.w.Reset(b.out)
	}
	return err
}

// Close stops the flushing and writes what waits; later lines are written
// at once.
func (b *buffered) Close() error {
	b.once.Do(func() {
		close(b.stop)
		<-b.done
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return b.flushLocked()
}
