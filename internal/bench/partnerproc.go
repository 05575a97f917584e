package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
)

// A partner process is the partner (internal/partner) in a process of its
// own, so that its CPU is not the bench process's: in the side-by-side
// mode with worker processes, the bench process then holds the load
// generator alone (the direct client, or the flow), and its CPU per call in
// the direct phase is the direct client's.
//
// It is a worker process started with -partner (the same hidden command):
// it prints "ready <url>" once it listens, then answers each line
// "counters" on its standard input with one JSON line of its
// partner.Counters, and stops when its standard input closes.

// benchPartner is the partner as the rig uses it: in-process
// (*partner.Server) or in a process of its own (*partnerProc).
type benchPartner interface {
	URL() string
	Requests() partner.Counters
	Close() error
}

// partnerProcessMain runs a partner process; see above.
func partnerProcessMain(ctx context.Context, fs *flag.FlagSet, args []string, stdin io.Reader, stdout io.Writer) error {
	cert := fs.String("cert", "", "the partner's certificate and key, PEM")
	ca := fs.String("client-ca", "", "the CA of client certificates, PEM")
	http1 := fs.Bool("http1", false, "offer HTTP/1.1 only")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cert == "" || *ca == "" || fs.NArg() > 0 {
		return errors.New("usage: worker-process -partner -cert FILE -client-ca FILE [-http1]")
	}
	pemBytes, err := os.ReadFile(*cert)
	if err != nil {
		return err
	}
	crt, err := tls.X509KeyPair(pemBytes, pemBytes)
	if err != nil {
		return fmt.Errorf("%s: %w", *cert, err)
	}
	caPEM, err := os.ReadFile(*ca)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s: no certificate", *ca)
	}
	p, err := partner.Start(partner.Options{Certificate: crt, ClientCAs: pool, DisableHTTP2: *http1})
	if err != nil {
		return err
	}
	defer p.Close()
	fmt.Fprintln(stdout, readyLine, p.URL())
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			if line != "counters" {
				return fmt.Errorf("partner process: unknown request %q", line)
			}
			b, err := json.Marshal(p.Requests())
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s\n", b)
		}
	}
}

// partnerProc is the bench's side of a partner process.
type partnerProc struct {
	*childProc
	url   string
	stdin io.WriteCloser
	out   *bufio.Scanner
	mu    sync.Mutex
	err   error // the first failure to read counters
}

// startPartnerProcess starts a partner process with the server
// certificate certFile (certificate and key, PEM) and the client CA caFile.
func (r *rig) startPartnerProcess(certFile, caFile string) (*partnerProc, error) {
	args := []string{"-partner", "-cert", certFile, "-client-ca", caFile}
	if r.o.HTTP1 {
		args = append(args, "-http1")
	}
	cmd := r.o.WorkerCommand(args)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &partnerProc{childProc: &childProc{name: "partner", cmd: cmd, output: NewTailBuffer(8 << 10), exited: make(chan struct{})}, stdin: stdin}
	cmd.Stderr = p.output
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the partner process: %w", err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	p.out = bufio.NewScanner(stdout)
	p.out.Buffer(make([]byte, 64<<10), 1<<20)
	ready := make(chan error, 1)
	go func() {
		if !p.out.Scan() {
			ready <- fmt.Errorf("the partner process ended before it was ready: %v", p.out.Err())
			return
		}
		url, ok := strings.CutPrefix(p.out.Text(), readyLine+" ")
		if !ok {
			ready <- fmt.Errorf("the partner process said %q, not ready", p.out.Text())
			return
		}
		p.url = url
		ready <- nil
	}()
	select {
	case err = <-ready:
	case <-time.After(60 * time.Second):
		err = errors.New("the partner process was not ready after 60s")
	}
	if err != nil {
		_ = stdin.Close()
		p.stop()
		return nil, fmt.Errorf("%w\n%s", err, p.output.String())
	}
	return p, nil
}

func (p *partnerProc) URL() string { return p.url }

// Requests asks the process for its counters; on failure it returns zero
// counters and keeps the error (partnerProc.err).
func (p *partnerProc) Requests() partner.Counters {
	p.mu.Lock()
	defer p.mu.Unlock()
	var c partner.Counters
	if p.err != nil {
		return c
	}
	if _, err := io.WriteString(p.stdin, "counters\n"); err != nil {
		p.err = fmt.Errorf("ask the partner process for its counters: %w", err)
		return c
	}
	if !p.out.Scan() {
		p.err = fmt.Errorf("the partner process did not answer: %v", p.out.Err())
		return c
	}
	if err := json.Unmarshal(p.out.Bytes(), &c); err != nil {
		p.err = fmt.Errorf("the partner process's counters: %w", err)
	}
	return c
}

// Close closes the process's stdin, which stops it.
func (p *partnerProc) Close() error {
	_ = p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	return nil
}
