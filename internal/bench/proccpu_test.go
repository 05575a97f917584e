package bench

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// The command name, field 2 of /proc/<pid>/stat, may hold spaces and
// parentheses: utime and stime are counted from its last parenthesis.
func TestParseProcStatCPU(t *testing.T) {
	line := "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 27 0 0 20 0 12 0 12345 1000000 500 18446744073709551615\n"
	got, ok := parseProcStatCPU([]byte(line))
	if !ok || got != 177*clockTick {
		t.Fatalf("parse = %v, %v; want %v", got, ok, 177*clockTick)
	}
	for _, bad := range []string{"", "4242 (x) S 1 2", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 x 27"} {
		if _, ok := parseProcStatCPU([]byte(bad)); ok {
			t.Errorf("parse(%q) succeeded", bad)
		}
	}
}

// PIDCPU of this process follows getrusage's figure, to a few ticks.
func TestProcCPUOfSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/<pid>/stat is Linux's")
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for n := 0; time.Now().Before(deadline); n++ {
		_ = make([]byte, n%4096)
	}
	proc, ok := PIDCPU(os.Getpid())
	self := cpuTime()
	if !ok || proc <= 0 {
		t.Fatalf("PIDCPU = %v, %v", proc, ok)
	}
	if d := self - proc; d < -5*clockTick || d > 5*clockTick {
		t.Errorf("procCPU %v, getrusage %v: more than 5 ticks apart", proc, self)
	}
	if _, ok := PIDCPU(1 << 30); ok {
		t.Error("procCPU of a pid that cannot exist succeeded")
	}
}
