package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
)

// server is one nats-server process the bench started.
type server struct {
	name string
	url  string
	cmd  *exec.Cmd
	out  *bench.TailBuffer
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
}

// cluster is a set of nats-server processes: three routed together (R3),
// or one alone (R1).
type cluster struct {
	servers []*server
	sync    string // the sync_interval every server was given
}

// startCluster starts n nats-server processes of binary bin with JetStream,
// their stores under dir, routed into one cluster when n > 1, each with
// `sync_interval: syncInterval` ("always" or a duration). It returns once
// every server answers JetStream requests and the cluster can place a
// stream of n replicas; on an error the processes started are stopped.
func startCluster(ctx context.Context, bin, dir string, n int, syncInterval string) (*cluster, error) {
	// All ports first, so every config can name every route.
	ports := make([]int, 2*n)
	for i := range ports {
		p, err := bench.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i]))
	}
	c := &cluster{sync: syncInterval}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		store := filepath.Join(dir, name)
		if err := os.MkdirAll(store, 0o700); err != nil {
			c.stop()
			return nil, err
		}
		var conf strings.Builder
		fmt.Fprintf(&conf, "server_name: %s\nlisten: 127.0.0.1:%d\n", name, ports[i])
		fmt.Fprintf(&conf, "jetstream {\n  store_dir: %q\n  sync_interval: %s\n}\n", store, syncInterval)
		if n > 1 {
			fmt.Fprintf(&conf, "cluster {\n  name: scalebench\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n",
				ports[n+i], strings.Join(routes, ", "))
		}
		confPath := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(confPath, []byte(conf.String()), 0o600); err != nil {
			c.stop()
			return nil, err
		}
		s, err := startServer(name, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]), bin, confPath)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.servers = append(c.servers, s)
	}
	if err := c.waitReady(ctx); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// startServer runs nats-server -c conf. The child dies with the bench
// (Pdeathsig on Linux), so an interrupted run leaves no server behind.
func startServer(name, url, bin, conf string) (*server, error) {
	s := &server{name: name, url: url, out: bench.NewTailBuffer(8 << 10), done: make(chan struct{})}
	s.cmd = exec.Command(bin, "-c", conf)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = childAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nats-server %s: %w", name, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// exited describes how the server ended, or is nil while it runs.
func (s *server) exited() error {
	select {
	case <-s.done:
		return fmt.Errorf("nats-server %s exited: %v\n%s", s.name, s.err, s.out.String())
	default:
		return nil
	}
}

// pid is the server's process id.
func (s *server) pid() int { return s.cmd.Process.Pid }

// stop ends every server: SIGTERM, then SIGKILL after 10 s.
func (c *cluster) stop() {
	var wg sync.WaitGroup
	for _, s := range c.servers {
		wg.Go(func() {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
			}
		})
	}
	wg.Wait()
}

// urls are the servers' client URLs, in order.
func (c *cluster) urls() []string {
	var u []string
	for _, s := range c.servers {
		u = append(u, s.url)
	}
	return u
}

// names are the servers' names, in order.
func (c *cluster) names() []string {
	var n []string
	for _, s := range c.servers {
		n = append(n, s.name)
	}
	return n
}

// waitReady waits up to 60 s until every server answers JetStream requests
// and a stream with one replica per server can be created (a meta leader
// is elected and every peer is current).
func (c *cluster) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		for _, s := range c.servers {
			if err := s.exited(); err != nil {
				return err
			}
		}
		if last = c.probe(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("the nats-server cluster was not ready within 60s: %w", last)
}

// probe creates and deletes a stream of len(c.servers) replicas.
func (c *cluster) probe(ctx context.Context) error {
	for _, s := range c.servers {
		if err := bench.JetStreamAnswers(ctx, s.url); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	nc, err := nats.Connect(strings.Join(c.urls(), ","), nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(pctx, jetstream.StreamConfig{
		Name: "SCALEBENCH_PROBE", Subjects: []string{"scalebench.probe"}, Replicas: len(c.servers),
	}); err != nil {
		return err
	}
	return js.DeleteStream(pctx, "SCALEBENCH_PROBE")
}

// leaderOf returns the Raft leader of a stream (consumer "") or of one of
// its consumers; a single server is its own leader.
func leaderOf(ctx context.Context, js jetstream.JetStream, stream, consumer string) (string, error) {
	if consumer == "" {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return "", err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return "", err
		}
		if info.Cluster == nil {
			return "", nil
		}
		return info.Cluster.Leader, nil
	}
	cons, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return "", err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil {
		return "", nil
	}
	return info.Cluster.Leader, nil
}

// moveLeader asks the stream's (or consumer's) Raft group to elect want as
// its leader (leader stepdown with a preferred placement, nats-server
// 2.11+) and waits up to 15 s until it has. Leaders are placed by hand
// because the server picks them at random: with three or five Raft groups
// on three servers, a random pick often puts two busy leaders on one
// server, and the comparison between P=1, 2 and 4 would measure luck.
func moveLeader(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream, consumer, want string) error {
	deadline := time.Now().Add(15 * time.Second)
	subject := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	if consumer != "" {
		subject = "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + consumer
	}
	body, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": want}})
	for {
		got, err := leaderOf(ctx, js, stream, consumer)
		if err == nil && got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leader of %s %s is %q (%v), not %s after 15s", stream, consumer, got, err, want)
		}
		if err == nil && got != "" {
			// The answer may be an error (an election still running): the
			// loop asks again.
			_, _ = nc.Request(subject, body, 2*time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// rssBytes is the resident set size of process pid (Linux /proc).
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
