package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var natsServer = &goBinary{pkg: "github.com/nats-io/nats-server/v2", name: "nats-server"}

// natsServerBinary builds the nats-server command of the module version
// go.mod names (the server the embedded tests run, as a process of its
// own), once per test run.
func natsServerBinary(t testing.TB) string { return natsServer.get(t) }

// natsNode is one nats-server process of a procCluster.
type natsNode struct {
	name string
	url  string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

// procCluster is a real three-node NATS cluster with JetStream, each node
// a nats-server process, so a test can kill one with SIGKILL as an
// operator's machine would lose it: no shutdown, no leadership handed over.
type procCluster struct {
	nodes []*natsNode
}

func startProcCluster(t *testing.T, n int) *procCluster {
	t.Helper()
	return startProcClusterWith(t, n, "")
}

// startProcClusterWith is startProcCluster with extra lines in every
// node's configuration file (subject mappings, say).
func startProcClusterWith(t *testing.T, n int, extra string) *procCluster {
	t.Helper()
	bin := natsServerBinary(t)
	clientPorts, routePorts := make([]int, n), make([]int, n)
	var routes []string
	for i := range n {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i]))
	}
	c := &procCluster{}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		dir := t.TempDir()
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: mtlsrelay-proc
  listen: 127.0.0.1:%d
  routes: [%s]
}
%s
`, name, clientPorts[i], filepath.Join(dir, "js"), routePorts[i], strings.Join(routes, ", "), extra)
		confPath := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		node := &natsNode{name: name, url: fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]), logs: &syncBuffer{}, done: make(chan error, 1)}
		node.cmd = exec.Command(bin, "-c", confPath)
		node.cmd.Stdout, node.cmd.Stderr = node.logs, node.logs
		if err := node.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { node.done <- node.cmd.Wait() }()
		t.Cleanup(func() {
			_ = node.cmd.Process.Kill()
			<-node.done
		})
		c.nodes = append(c.nodes, node)
	}
	for _, node := range c.nodes {
		checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			conn, err := net.DialTimeout("tcp", strings.TrimPrefix(node.url, "nats://"), time.Second)
			if err != nil {
				return fmt.Errorf("node %s not listening: %v\n%s", node.name, err, node.logs.String())
			}
			return conn.Close()
		})
	}
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// JetStream needs a meta leader before streams can be created.
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err
	})
	return c
}

// URL lists every node, for clients that fail over.
func (c *procCluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.url
	}
	return strings.Join(urls, ",")
}

// node returns the node called name.
func (c *procCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	panic("no node " + name)
}

// kill sends SIGKILL to node name and waits until it is gone.
func (c *procCluster) kill(t *testing.T, name string) {
	t.Helper()
	n := c.node(name)
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	n.done <- <-n.done
}

// raftGroup names what a Raft group leads: a stream, or a stream's consumer.
type raftGroup struct {
	stream, consumer string
}

func (g raftGroup) String() string {
	if g.consumer != "" {
		return g.stream + "/" + g.consumer
	}
	return g.stream
}

// leader returns the server that leads g.
func (g raftGroup) leader(ctx context.Context, js jetstream.JetStream) (string, error) {
	var ci *jetstream.ClusterInfo
	if g.consumer != "" {
		cons, err := js.Consumer(ctx, g.stream, g.consumer)
		if err != nil {
			return "", err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return "", err
		}
		ci = info.Cluster
	} else {
		s, err := js.Stream(ctx, g.stream)
		if err != nil {
			return "", err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return "", err
		}
		ci = info.Cluster
	}
	if ci == nil || ci.Leader == "" {
		return "", fmt.Errorf("%s has no leader", g)
	}
	return ci.Leader, nil
}

// moveLeader makes server lead g, with a leader step-down that names it as
// the preferred successor (nats-server 2.11 and later).
func (g raftGroup) moveLeader(t *testing.T, nc *nats.Conn, js jetstream.JetStream, server string) {
	t.Helper()
	subject := "$JS.API.STREAM.LEADER.STEPDOWN." + g.stream
	if g.consumer != "" {
		subject = "$JS.API.CONSUMER.LEADER.STEPDOWN." + g.stream + "." + g.consumer
	}
	body := fmt.Sprintf(`{"placement":{"preferred":%q}}`, server)
	checkFor(t, 30*time.Second, 250*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		lead, err := g.leader(ctx, js)
		if err == nil && lead == server {
			return nil
		}
		if err == nil {
			reply, rerr := nc.RequestWithContext(ctx, subject, []byte(body))
			if rerr != nil {
				return rerr
			}
			var resp struct {
				Error *struct {
					Description string `json:"description"`
				} `json:"error"`
			}
			if json.Unmarshal(reply.Data, &resp) == nil && resp.Error != nil {
				return fmt.Errorf("step down %s: %s", g, resp.Error.Description)
			}
		}
		return fmt.Errorf("%s led by %q, want %s (%v)", g, lead, server, err)
	})
}
