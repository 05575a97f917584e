package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// childProc is a program the rig runs as a process of its own (the NATS
// server, Benthos), so that its CPU is its own and not the bench's.
type childProc struct {
	name    string
	cmd     *exec.Cmd
	output  *TailBuffer // its standard output and error, the last 8 KiB
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// startChild starts cmd; its output is kept for error messages.
func startChild(name string, cmd *exec.Cmd) (*childProc, error) {
	c := &childProc{name: name, cmd: cmd, output: NewTailBuffer(8 << 10), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.output, c.output
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *childProc) pid() int { return c.cmd.Process.Pid }

// exitedErr describes how the process ended, with the end of its output,
// or is nil while it runs.
func (c *childProc) exitedErr() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited: %v\n%s", c.name, c.waitErr, c.output.String())
	default:
		return nil
	}
}

// stop asks the process to end (SIGTERM), and kills it after 10 s.
func (c *childProc) stop() {
	c.once.Do(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	})
}

// TailBuffer keeps the last bytes written to it: a child process's
// output, for errors. Make one with NewTailBuffer.
type TailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// JetStreamAnswers connects to the NATS server at url and asks it for
// JetStream account information, within 2 s.
func JetStreamAnswers(ctx context.Context, url string) error {
	nc, err := nats.Connect(url, nats.Name("mtlsrelay bench check"), nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(actx)
	return err
}

// NewTailBuffer returns a TailBuffer that keeps the last max bytes.
func NewTailBuffer(max int) *TailBuffer { return &TailBuffer{max: max} }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startNATSProcess runs nats-server (the binary bin) on a free loopback
// port with JetStream, its store in storeDir, and waits until JetStream
// answers. The server's default limits are those of the embedded one.
func startNATSProcess(ctx context.Context, bin, storeDir string) (*childProc, string, error) {
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return nil, "", err
	}
	var lastErr error
	for range 3 { // the free port may be taken before the server binds it
		port, err := FreePort()
		if err != nil {
			return nil, "", err
		}
		cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", storeDir, "-n", "mtlsrelay-bench")
		c, err := startChild("nats-server", cmd)
		if err != nil {
			return nil, "", err
		}
		url := fmt.Sprintf("nats://127.0.0.1:%d", port)
		if lastErr = waitJetStream(ctx, url, c); lastErr == nil {
			return c, url, nil
		}
		c.stop()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", lastErr
}

// waitJetStream waits up to 30 s until the server at url answers with
// JetStream on, or the process c exits.
func waitJetStream(ctx context.Context, url string, c *childProc) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := c.exitedErr(); err != nil {
			return err
		}
		err := JetStreamAnswers(ctx, url)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server at %s did not answer with JetStream within 30s: %v\n%s", url, err, c.output.String())
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
