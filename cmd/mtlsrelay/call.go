package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/client"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

func newCallCmd() *cobra.Command {
	var (
		natsURL, configPath, prefix, method, path, absURL, data, soapAction, soapOperation, soapVersion, id, replyTo, output, tenant string
		headers, query                                                                                                               []string
		noWait, direct, progress                                                                                                     bool
		timeout                                                                                                                      time.Duration
		maxAttempts                                                                                                                  int
	)
	cmd := &cobra.Command{
		Use:   "call CONNECTION",
		Short: "Enqueue a call and print its result",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			call := &jobs.Call{
				ID:          id,
				Connection:  args[0],
				Method:      method,
				Path:        path,
				URL:         absURL,
				ReplyTo:     replyTo,
				MaxAttempts: maxAttempts,
				Progress:    progress,
			}
			if progress && direct {
				return fmt.Errorf("--progress needs a durable call: a direct call has one reply")
			}
			if call.ID == "" {
				call.ID = newID()
			}
			soap := soapAction != "" || soapOperation != "" || soapVersion != ""
			// A large file is uploaded by reference once connected.
			upload, err := largeFile(data, soap)
			if err != nil {
				return err
			}
			if upload == "" {
				body, err := readData(data)
				if err != nil {
					return err
				}
				switch {
				case soap:
					call.SOAP = &jobs.SOAP{Version: soapVersion, Action: soapAction, Operation: soapOperation, Body: body}
				case utf8.ValidString(body):
					call.Body = body
				default:
					call.BodyBase64 = []byte(body)
				}
			}
			if call.Headers, err = parsePairs(headers, ":", "-H 'Name: value'"); err != nil {
				return err
			}
			if call.Query, err = parsePairs(query, "=", "--query name=value"); err != nil {
				return err
			}
			if timeout > 0 {
				call.TimeoutMS = int(timeout / time.Millisecond)
			}
			var cfg *worker.Config
			if configPath != "" {
				if cfg, err = worker.LoadConfig(configPath); err != nil {
					return err
				}
				if natsURL == "" {
					natsURL = cfg.NATS.URL
				}
				if prefix == "" {
					prefix = cfg.NATS.Prefix
				}
			}
			if natsURL == "" {
				natsURL = "nats://127.0.0.1:4222"
			}
			var extra []nats.Option
			if tenant != "" {
				// Replies and acks under the tenant's own inbox prefix, the
				// one its NATS user may subscribe to.
				extra = append(extra, nats.CustomInboxPrefix(jobs.TenantInbox(tenant)))
			}
			nc, err := connectNATS(natsURL, cfg, "mtlsrelay call", zerolog.Nop(), extra...)
			if err != nil {
				return err
			}
			defer nc.Close()
			client, err := client.New(nc, client.WithSubjects(jobs.Subjects{Prefix: prefix}), client.WithTenant(tenant))
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), wait(timeout))
			defer cancel()
			if upload != "" {
				f, err := os.Open(upload)
				if err != nil {
					return fmt.Errorf("--data @%s: %w", upload, err)
				}
				call.BodyRef, err = client.PutBody(ctx, "calls/"+call.ID, f)
				f.Close()
				if err != nil {
					return err
				}
			}
			var res *jobs.Result
			switch {
			case noWait:
				ack, err := client.Enqueue(ctx, call)
				if err != nil {
					return err
				}
				return printJSON(map[string]any{"id": call.ID, "reply_to": call.ReplyTo, "stream": ack.Stream, "seq": ack.Sequence, "duplicate": ack.Duplicate})
			case direct:
				res, err = client.Direct(ctx, call)
			default:
				res, err = client.CallProgress(ctx, call, func(p *jobs.Result) {
					// One line per failed attempt, apart from the result.
					line, _ := json.Marshal(p)
					fmt.Fprintf(cmd.ErrOrStderr(), "%s\n", line)
				})
			}
			if err != nil {
				return err
			}
			if output != "" {
				if err := writeBody(ctx, client, res, output); err != nil {
					return err
				}
				res.Body, res.BodyBase64 = "", nil
			}
			if err := printJSON(res); err != nil {
				return err
			}
			if !res.OK {
				return exitCode(2)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&natsURL, "nats", "", "NATS URL (default: nats.url of --config, else nats://127.0.0.1:4222)")
	f.StringVar(&configPath, "config", "", "config file whose nats section (URL, credentials, TLS, prefix) to use")
	f.StringVar(&prefix, "prefix", "", "subject prefix (default mtlsrelay)")
	f.StringVar(&tenant, "tenant", "", "send as this tenant: calls on <prefix>.calls.<tenant>.<connection>, results under <prefix>.results.<tenant>, inbox _INBOX_<tenant>")
	f.StringVarP(&method, "method", "X", "", "HTTP method (default GET, POST for SOAP)")
	f.StringVar(&path, "path", "", "path joined to the connection's base URL")
	f.StringVar(&absURL, "url", "", "absolute URL instead of --path (its host must be allowed)")
	f.StringVarP(&data, "data", "d", "", "request body, or @FILE to read it from a file (@- for stdin); a file over 256 KiB is uploaded to the Object Store and sent as body_ref")
	f.StringArrayVarP(&headers, "header", "H", nil, "request header 'Name: value' (repeatable)")
	f.StringArrayVar(&query, "query", nil, "query parameter name=value (repeatable)")
	f.StringVar(&soapAction, "soap-action", "", "make a SOAP call with this action; --data is the Body XML")
	f.StringVar(&soapOperation, "soap-operation", "", "make a SOAP call to this operation of the connection's WSDL (see `mtlsrelay soap describe`); --data is the Body XML")
	f.StringVar(&soapVersion, "soap-version", "", "SOAP version 1.1 (default) or 1.2")
	f.StringVar(&id, "id", "", "call id (default: random)")
	f.StringVarP(&output, "output", "o", "", "write the response body to this file (a body_ref is read from the Object Store) and leave it out of the printed result")
	f.StringVar(&replyTo, "reply-to", "", "result subject (default mtlsrelay.results.<id>)")
	f.IntVar(&maxAttempts, "max-attempts", 0, "attempts (default: the connection's)")
	f.DurationVar(&timeout, "timeout", 0, "attempt deadline (default: the connection's)")
	f.BoolVar(&noWait, "no-wait", false, "enqueue and print the id without waiting for the result")
	f.BoolVar(&direct, "direct", false, "send as a direct (core NATS request) call, not persisted")
	f.BoolVar(&progress, "progress", false, "ask for a progress message after each failed attempt that is retried, printed to stderr as one JSON line (not with --direct)")
	return cmd
}

// wait is how long the command waits for a result: enough for retries.
func wait(attempt time.Duration) time.Duration {
	return max(2*time.Minute, 10*attempt)
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "cli-" + hex.EncodeToString(b)
}

// largeFile returns the path of --data @FILE when the file is too large
// to send inside the call (it is then uploaded and sent by body_ref), ""
// otherwise. A SOAP body always goes inside the call.
func largeFile(d string, soap bool) (string, error) {
	name, ok := strings.CutPrefix(d, "@")
	if !ok || name == "-" || soap {
		return "", nil
	}
	st, err := os.Stat(name)
	if err != nil {
		return "", fmt.Errorf("--data %s: %w", d, err)
	}
	if st.Size() > client.DefaultInlineMax {
		return name, nil
	}
	return "", nil
}

// writeBody writes res's response body to path, from the result or, for a
// body_ref, streamed from the Object Store and checked.
func writeBody(ctx context.Context, c *client.Client, res *jobs.Result, path string) error {
	r, err := c.OpenBody(ctx, res)
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("--output %s: %w", path, err)
	}
	return f.Close()
}

func readData(d string) (string, error) {
	name, ok := strings.CutPrefix(d, "@")
	if !ok {
		return d, nil
	}
	var b []byte
	var err error
	if name == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return "", fmt.Errorf("--data %s: %w", d, err)
	}
	return string(b), nil
}

func parsePairs(items []string, sep, form string) (map[string][]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	out := map[string][]string{}
	for _, it := range items {
		k, v, ok := strings.Cut(it, sep)
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%q is not of the form %s", it, form)
		}
		k = strings.TrimSpace(k)
		if sep == "=" {
			if uk, err := url.QueryUnescape(k); err == nil {
				k = uk
			}
		}
		out[k] = append(out[k], strings.TrimSpace(v))
	}
	return out, nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
