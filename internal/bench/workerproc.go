package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/logging"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// A worker process is a worker (worker.New + Run, logging nowhere) in a
// process of its own, so that the operating system's figures for it (peak
// RSS, CPU) are the worker's alone, without the NATS server, the partner or
// the load generator. The large-bodies mode runs its workers so when
// Options.WorkerCommand is set.
//
// Protocol: the bench writes the worker's YAML config (nats.url set) and
// starts the process with -config FILE; the process prints "ready" on its
// standard output once the worker consumes, runs until its standard input
// closes (the bench stops it, or died), then prints one JSON line of its
// runtime's memory figures (workerProcessStats) and exits.

// readyLine is what a worker process prints once its worker consumes.
const readyLine = "ready"

// workerProcessStats is what a worker process measured of its own runtime,
// sampled every 100 ms (runtime/metrics), printed as its last line.
type workerProcessStats struct {
	// HeapPeak is the largest heap of objects, live and not yet swept
	// (/memory/classes/heap/objects:bytes).
	HeapPeak uint64 `json:"heap_peak"`
	// HeapGoalPeak is the largest heap goal of the collector.
	HeapGoalPeak uint64 `json:"heap_goal_peak"`
	// TotalPeak is the largest amount of memory the Go runtime had mapped
	// (/memory/classes/total:bytes), what RSS can be at most from Go.
	TotalPeak uint64 `json:"total_peak"`
	// GCCycles counts the collections of the run.
	GCCycles uint64 `json:"gc_cycles"`
	// MemoryLimit is Go's memory limit (GOMEMLIMIT), MaxInt64 for none.
	MemoryLimit int64 `json:"memory_limit"`
	// GCPercent is the collector's target (GOGC) worker.TuneRuntime set.
	GCPercent int `json:"gc_percent"`
	// HeapProfiles counts the heap profiles written (-heap-profile).
	HeapProfiles int `json:"heap_profiles"`
}

// WorkerProcessMain runs a worker process (see Options.WorkerCommand): args
// are its flags, -config FILE (the worker's YAML config, which names the
// NATS server in nats.url) and optionally -heap-profile FILE (a heap
// profile written each time the heap passes its previous peak by 10%).
// It prints "ready" on stdout once the worker consumes, stops the worker
// when stdin closes or ctx ends, and prints its memory figures as one JSON
// line on stdout before it returns.
func WorkerProcessMain(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "-partner" {
		return partnerProcessMain(ctx, flag.NewFlagSet("partner-process", flag.ContinueOnError), args[1:], stdin, stdout)
	}
	fs := flag.NewFlagSet("worker-process", flag.ContinueOnError)
	config := fs.String("config", "", "the worker's YAML config, nats.url set")
	heapProfile := fs.String("heap-profile", "", "write a heap profile to this file each time the heap passes its peak by 10%")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the run, from the ready line until the worker stops, to this file")
	logTo := fs.String("log", "", "log as serve does (JSON, cfg's log.level, info by default) to this file; default: no logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *config == "" || fs.NArg() > 0 {
		return errors.New("usage: worker-process -config FILE [-heap-profile FILE] [-cpu-profile FILE] [-log FILE]")
	}
	cfg, err := worker.LoadConfig(*config)
	if err != nil {
		return err
	}
	if cfg.NATS.URL == "" {
		return fmt.Errorf("%s: nats.url is empty", *config)
	}
	// As `serve` does: the collector's target and memory limit.
	rt := worker.TuneRuntime(cfg)
	mon := startMemMonitor(*heapProfile)
	mon.stats.GCPercent = rt.GCPercent
	nc, err := nats.Connect(cfg.NATS.URL, nats.Name("mtlsrelay bench "+cfg.Worker.Name))
	if err != nil {
		mon.stop()
		return fmt.Errorf("connect %s to NATS: %w", cfg.Worker.Name, err)
	}
	defer nc.Close()
	log := zerolog.Nop()
	if *logTo != "" {
		f, err := os.OpenFile(*logTo, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			mon.stop()
			return err
		}
		defer f.Close()
		var closeLog func() error
		if log, closeLog, err = logging.Open(f, cfg.Log.Level, "json"); err != nil {
			mon.stop()
			return err
		}
		defer closeLog()
	}
	w, err := worker.New(cfg, nc, worker.WithLogger(log))
	if err != nil {
		mon.stop()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The bench closes stdin to stop the worker; so does its death.
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t := time.NewTicker(10 * time.Millisecond)
	for !w.Ready() {
		select {
		case err := <-done:
			t.Stop()
			mon.stop()
			return fmt.Errorf("worker %s stopped while starting: %v", cfg.Worker.Name, err)
		case <-t.C:
		}
	}
	t.Stop()
	stopProfile, perr := startCPUProfile(*cpuProfile)
	if perr != nil {
		cancel()
		<-done
		mon.stop()
		return perr
	}
	fmt.Fprintln(stdout, readyLine)
	err = <-done
	err = errors.Join(err, stopProfile())
	stats := mon.stop()
	line, jerr := json.Marshal(stats)
	if jerr != nil {
		return errors.Join(err, jerr)
	}
	fmt.Fprintf(stdout, "%s\n", line)
	return err
}

// startCPUProfile starts a CPU profile into path, none when path is
// empty; the function it returns stops it and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// memMonitor samples this process's runtime memory figures.
type memMonitor struct {
	heapProfile string
	stopc       chan struct{}
	done        chan struct{}
	stats       workerProcessStats
	profiled    uint64 // heap size at the last profile written
	profileErr  error
}

func startMemMonitor(heapProfile string) *memMonitor {
	m := &memMonitor{heapProfile: heapProfile, stopc: make(chan struct{}), done: make(chan struct{})}
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/goal:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	read := func() {
		metrics.Read(samples)
		get := func(i int) uint64 {
			if samples[i].Value.Kind() != metrics.KindUint64 {
				return 0
			}
			return samples[i].Value.Uint64()
		}
		heap := get(0)
		m.stats.HeapPeak = max(m.stats.HeapPeak, heap)
		m.stats.HeapGoalPeak = max(m.stats.HeapGoalPeak, get(1))
		m.stats.TotalPeak = max(m.stats.TotalPeak, get(2))
		m.stats.GCCycles = get(3)
		if m.heapProfile != "" && heap >= 4<<20 && float64(heap) > 1.1*float64(m.profiled) {
			m.profiled = heap
			m.profileErr = writeHeapProfile(m.heapProfile)
			m.stats.HeapProfiles++
		}
	}
	read()
	go func() {
		defer close(m.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.stopc:
				read()
				return
			case <-t.C:
				read()
			}
		}
	}()
	return m
}

func (m *memMonitor) stop() workerProcessStats {
	close(m.stopc)
	<-m.done
	m.stats.MemoryLimit = debug.SetMemoryLimit(-1)
	if m.heapProfile != "" && m.stats.HeapProfiles == 0 {
		// The heap never grew enough: its state at the end, then.
		m.profileErr = writeHeapProfile(m.heapProfile)
		m.stats.HeapProfiles++
	}
	if m.profileErr != nil {
		fmt.Fprintln(os.Stderr, "mtlsrelay bench worker process: heap profile:", m.profileErr)
	}
	return m.stats
}

// writeHeapProfile replaces path with a heap profile, through a temporary
// file, so that a reader never sees half of one.
func writeHeapProfile(path string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// workerProc is the bench's side of a worker process.
type workerProc struct {
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	sampler *rssSampler
	ready   chan struct{} // closed on the ready line
	exited  chan struct{} // closed once the process was waited for
	stats   *workerProcessStats
	waitErr error

	stopOnce sync.Once
	hwm      int64 // VmHWM read before stopping it
	peak     int64 // largest VmRSS sampled
}

// DeployedMemoryLimit is the memory limit of a worker's container in
// deploy/k8s/deployment.yaml. A worker there sets its Go memory limit
// from it (worker.GoMemoryLimit); a worker process of the bench runs with
// the same unless told otherwise.
const DeployedMemoryLimit = 512 << 20

// workerMemoryLimit is the GOMEMLIMIT a worker process gets, "" to leave
// the environment's: 80% of MaxRSSMiB when set, else what a worker sets
// itself in the deployed container (worker.GoMemoryLimit of
// DeployedMemoryLimit), unless GOMEMLIMIT is in the environment or in
// WorkerEnv.
func (o Options) workerMemoryLimit() string {
	// An empty GOMEMLIMIT is none set, as the worker takes it.
	if os.Getenv("GOMEMLIMIT") != "" {
		return ""
	}
	for _, kv := range o.WorkerEnv {
		if v, ok := strings.CutPrefix(kv, "GOMEMLIMIT="); ok && v != "" {
			return ""
		}
	}
	if o.MaxRSSMiB > 0 {
		return strconv.FormatInt(int64(o.MaxRSSMiB*0.8*(1<<20)), 10)
	}
	return strconv.FormatInt(worker.GoMemoryLimit(DeployedMemoryLimit), 10)
}

// startWorkerProcess writes the worker's config, starts its process and
// waits until its worker consumes.
func (r *rig) startWorkerProcess(ctx context.Context, name, config string, index int) error {
	path := filepath.Join(r.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return err
	}
	args := []string{"-config", path}
	numbered := func(p string) string {
		if r.o.Workers > 1 {
			return strings.TrimSuffix(p, filepath.Ext(p)) + fmt.Sprintf("-%d", index+1) + filepath.Ext(p)
		}
		return p
	}
	if p := r.o.WorkerHeapProfile; p != "" {
		args = append(args, "-heap-profile", numbered(p))
	}
	if p := r.o.WorkerCPUProfile; p != "" {
		args = append(args, "-cpu-profile", numbered(p))
	}
	if p := r.o.WorkerLog; p != "" {
		if st, err := os.Stat(p); err != nil || st.Mode().IsRegular() {
			// A file of each worker's; not /dev/null or /dev/stderr.
			p = numbered(p)
		}
		args = append(args, "-log", p)
	}
	cmd := r.o.WorkerCommand(args)
	if len(r.o.WorkerEnv) > 0 {
		cmd.Env = append(cmd.Environ(), r.o.WorkerEnv...)
	}
	if cmd.Stderr == nil {
		// GODEBUG=gctrace=1, inherited, writes there: each line says whose.
		cmd.Stderr = &prefixWriter{prefix: "[" + name + "] ", w: os.Stderr}
	}
	if limit := r.o.workerMemoryLimit(); limit != "" {
		cmd.Env = append(cmd.Environ(), "GOMEMLIMIT="+limit)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start worker process %s: %w", name, err)
	}
	p := &workerProc{name: name, cmd: cmd, stdin: stdin, ready: make(chan struct{}), exited: make(chan struct{})}
	p.sampler = startRSSSamplerOf(procPath(cmd.Process.Pid), 50*time.Millisecond)
	r.procs = append(r.procs, p)
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(stdout)
		readySeen := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == readyLine && !readySeen:
				readySeen = true
				close(p.ready)
			case strings.HasPrefix(line, "{"):
				var st workerProcessStats
				if json.Unmarshal([]byte(line), &st) == nil {
					p.stats = &st
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.waitErr = cmd.Wait()
	}()
	t := time.NewTimer(60 * time.Second)
	defer t.Stop()
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("worker process %s exited while starting: %v", name, p.waitErr)
	case <-t.C:
		return fmt.Errorf("worker process %s was not ready after 60s", name)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop closes the process's stdin, which stops its worker, and waits for
// it to exit (killing it past a minute); it keeps the figures of its memory.
func (p *workerProc) stop() {
	p.stopOnce.Do(func() {
		if _, hwm, ok := procStatusOf(procPath(p.cmd.Process.Pid)); ok {
			p.hwm = hwm
		}
		_ = p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(time.Minute):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		p.peak = p.sampler.Stop()
	})
}

// memory returns what was measured of the process; call after stop.
func (p *workerProc) memory() WorkerMemory {
	m := WorkerMemory{Name: p.name, PID: p.cmd.Process.Pid, VmHWMMiB: mib(p.hwm), SampledRSSMiB: mib(p.peak)}
	if ps := p.cmd.ProcessState; ps != nil {
		m.MaxRSSMiB = mib(maxRSSOf(ps))
		m.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	m.PeakRSSMiB = max(m.VmHWMMiB, m.SampledRSSMiB, m.MaxRSSMiB)
	if st := p.stats; st != nil {
		m.HeapPeakMiB = mib(int64(st.HeapPeak))
		m.HeapGoalPeakMiB = mib(int64(st.HeapGoalPeak))
		m.RuntimeTotalPeakMiB = mib(int64(st.TotalPeak))
		m.GCCycles = st.GCCycles
		if st.MemoryLimit != math.MaxInt64 {
			m.MemoryLimitMiB = mib(st.MemoryLimit)
		}
		m.GCPercent = st.GCPercent
	}
	if p.waitErr != nil {
		m.ExitError = p.waitErr.Error()
	}
	return m
}

// WorkerMemory is what was measured of one worker process.
type WorkerMemory struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// PeakRSSMiB is the process's peak resident set: the largest of
	// VmHWMMiB (/proc/<pid>/status VmHWM, read when the calls were done,
	// before the worker stopped), SampledRSSMiB (the largest VmRSS sampled
	// every 50 ms) and MaxRSSMiB (getrusage's ru_maxrss of the ended
	// process).
	PeakRSSMiB    float64 `json:"peak_rss_mib"`
	VmHWMMiB      float64 `json:"vmhwm_mib"`
	SampledRSSMiB float64 `json:"sampled_rss_mib"`
	MaxRSSMiB     float64 `json:"ru_maxrss_mib"`
	// From the worker's Go runtime, sampled every 100 ms: the largest heap
	// of objects (live and unswept), the largest heap goal, the most memory
	// the runtime had mapped; the collections; Go's memory limit (absent
	// for none).
	HeapPeakMiB         float64 `json:"heap_peak_mib"`
	HeapGoalPeakMiB     float64 `json:"heap_goal_peak_mib"`
	RuntimeTotalPeakMiB float64 `json:"runtime_total_peak_mib"`
	GCCycles            uint64  `json:"gc_cycles"`
	MemoryLimitMiB      float64 `json:"memory_limit_mib,omitempty"`
	// GCPercent is the collector's target (GOGC) of the worker process.
	GCPercent int `json:"gc_percent"`
	// CPUSeconds is the process's CPU time, user and system, start to end.
	CPUSeconds float64 `json:"cpu_seconds"`
	// ExitError is how the process ended, when not cleanly.
	ExitError string `json:"exit_error,omitempty"`
}

// prefixWriter writes each line with a prefix (whole lines at once, the
// last one when its newline comes).
type prefixWriter struct {
	prefix string
	w      io.Writer
	mu     sync.Mutex
	line   []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.line = append(p.line, b...)
			break
		}
		out := append(append([]byte(p.prefix), p.line...), b[:i+1]...)
		p.line = p.line[:0]
		b = b[i+1:]
		if _, err := p.w.Write(out); err != nil {
			return n, err
		}
	}
	return n, nil
}
