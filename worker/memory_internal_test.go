package worker

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// The budget admits calls by the bytes they may hold and refuses the one
// that does not fit until another is released; a call larger than the
// whole budget still runs, alone.
func TestMemoryBudget(t *testing.T) {
	const inline = 256 << 10
	per := int64(3*inline + streamBuffers)
	m := newMemoryBudget(3*per, inline)
	var held []int64
	for i := range 3 {
		n, ok := m.tryAdmit(0)
		if !ok || n != per {
			t.Fatalf("call %d: admitted %v with %d bytes; want %d", i, ok, n, per)
		}
		held = append(held, n)
	}
	if _, ok := m.tryAdmit(0); ok {
		t.Fatal("a fourth call fit in a budget of three")
	}
	m.release(held[0])
	if n, ok := m.tryAdmit(1000); ok {
		t.Fatalf("a call of a 1000-byte message (%d bytes) fit where only %d were free", n, per)
	}
	if n, ok := m.tryAdmit(0); !ok || n != per {
		t.Fatal("a released call's bytes were not admitted again")
	}
	// A call larger than the budget costs the whole budget.
	big := newMemoryBudget(per, inline)
	if n, ok := big.tryAdmit(10 << 20); !ok || n != per {
		t.Fatalf("an oversized call: admitted %v with %d bytes; want the whole budget %d", ok, n, per)
	}
	if _, ok := big.tryAdmit(0); ok {
		t.Fatal("a call fit beside one that took the whole budget")
	}
	var none *memoryBudget
	if _, ok := none.tryAdmit(1 << 30); !ok {
		t.Fatal("no budget refused a call")
	}
}

// TuneRuntime raises the collector's target only where a memory limit
// bounds the heap, takes the container's limit when GOMEMLIMIT is unset,
// and leaves what the operator set in GOGC or GOMEMLIMIT alone.
func TestTuneRuntime(t *testing.T) {
	prevGC := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(prevGC)
		debug.SetMemoryLimit(prevLimit)
	})
	dir := t.TempDir()
	cgroup := func(content string) []string {
		path := filepath.Join(dir, "memory.max")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{filepath.Join(dir, "absent"), path}
	}
	env := func(vars map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	}
	for _, tc := range []struct {
		name        string
		gcPercent   int
		vars        map[string]string
		cgroup      string
		goLimit     int64 // the limit Go applied from GOMEMLIMIT, as at start
		goGC        int   // the target Go applied from GOGC
		want        RuntimeTuning
		wantGoLimit int64
		wantWarning string // a part of the warning; "" for none
	}{
		{name: "no limit anywhere: Go's default", cgroup: "max\n",
			want: RuntimeTuning{GCPercent: 100, GCFrom: "default"}, wantGoLimit: math.MaxInt64},
		{name: "container limit: 90% of it, and 400", cgroup: "536870912\n",
			want:        RuntimeTuning{GCPercent: 400, GCFrom: "default", MemoryLimit: 483183821, Source: "cgroup"},
			wantGoLimit: 483183821},
		{name: "GOMEMLIMIT wins over the container", cgroup: "536870912\n", vars: map[string]string{"GOMEMLIMIT": "300MiB"}, goLimit: 300 << 20,
			want: RuntimeTuning{GCPercent: 400, GCFrom: "default", MemoryLimit: 300 << 20, Source: "GOMEMLIMIT"}, wantGoLimit: 300 << 20},
		{name: "GOMEMLIMIT=off: no limit, whatever the container's", cgroup: "536870912\n", vars: map[string]string{"GOMEMLIMIT": "off"}, goLimit: math.MaxInt64,
			want: RuntimeTuning{GCPercent: 100, GCFrom: "default"}, wantGoLimit: math.MaxInt64},
		{name: "GOGC wins", cgroup: "536870912\n", vars: map[string]string{"GOGC": "250"}, goGC: 250, gcPercent: 800,
			want:        RuntimeTuning{GCPercent: 250, GCFrom: "GOGC", MemoryLimit: 483183821, Source: "cgroup"},
			wantGoLimit: 483183821},
		{name: "GOMEMLIMIT of the whole container: 100, and a warning", cgroup: "536870912\n", vars: map[string]string{"GOMEMLIMIT": "512MiB"}, goLimit: 512 << 20,
			want: RuntimeTuning{GCPercent: 100, GCFrom: "default", MemoryLimit: 512 << 20, Source: "GOMEMLIMIT"}, wantWarning: "GOGC stays 100", wantGoLimit: 512 << 20},
		{name: "GOMEMLIMIT of the whole container with GOGC 400: a warning", cgroup: "536870912\n", vars: map[string]string{"GOMEMLIMIT": "512MiB", "GOGC": "400"}, goLimit: 512 << 20, goGC: 400,
			want: RuntimeTuning{GCPercent: 400, GCFrom: "GOGC", MemoryLimit: 512 << 20, Source: "GOMEMLIMIT"}, wantWarning: "killed for memory", wantGoLimit: 512 << 20},
		{name: "empty variables are unset", cgroup: "536870912\n", vars: map[string]string{"GOMEMLIMIT": "", "GOGC": ""},
			want:        RuntimeTuning{GCPercent: 400, GCFrom: "default", MemoryLimit: 483183821, Source: "cgroup"},
			wantGoLimit: 483183821},
		{name: "a small container keeps 32 MiB of headroom", cgroup: "134217728\n",
			want:        RuntimeTuning{GCPercent: 400, GCFrom: "default", MemoryLimit: 96 << 20, Source: "cgroup"},
			wantGoLimit: 96 << 20},
		{name: "worker.gc_percent applies without a limit too", cgroup: "max", gcPercent: 200,
			want: RuntimeTuning{GCPercent: 200, GCFrom: "worker.gc_percent"}, wantGoLimit: math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			if tc.goLimit != 0 {
				debug.SetMemoryLimit(tc.goLimit)
			}
			debug.SetGCPercent(100)
			if tc.goGC != 0 {
				debug.SetGCPercent(tc.goGC)
			}
			got := tuneRuntime(tc.gcPercent, env(tc.vars), cgroup(tc.cgroup))
			if (got.Warning == "") != (tc.wantWarning == "") || !strings.Contains(got.Warning, tc.wantWarning) {
				t.Errorf("warning %q; want one with %q", got.Warning, tc.wantWarning)
			}
			got.Warning = ""
			if got != tc.want {
				t.Errorf("tuneRuntime = %+v; want %+v", got, tc.want)
			}
			if gc := debug.SetGCPercent(100); gc != tc.want.GCPercent {
				t.Errorf("the runtime's GOGC is %d; want %d", gc, tc.want.GCPercent)
			}
			if limit := debug.SetMemoryLimit(-1); limit != tc.wantGoLimit {
				t.Errorf("the runtime's memory limit is %d; want %d", limit, tc.wantGoLimit)
			}
		})
	}
}

// A negative worker.gc_percent (GOGC's "off") is refused, not taken for
// the default.
func TestGCPercentNegativeRefused(t *testing.T) {
	_, err := ParseConfig([]byte("worker:\n  gc_percent: -1\n"))
	if err == nil || !strings.Contains(err.Error(), "worker.gc_percent -1") {
		t.Fatalf("ParseConfig: %v; want worker.gc_percent refused", err)
	}
	cfg, err := ParseConfig([]byte("worker:\n  gc_percent: 250\n"))
	if err != nil || cfg.Worker.GCPercent != 250 {
		t.Fatalf("ParseConfig: %v, %+v", err, cfg)
	}
}
