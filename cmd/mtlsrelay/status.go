package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

func newStatusCmd() *cobra.Command {
	var (
		natsURL, configPath, prefix string
		wait                        time.Duration
		asJSON                      bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List the running workers, their calls in flight, the calls pending and certificate expiries",
		Long: "status discovers the workers through the NATS micro service API ($SRV.INFO.mtlsrelay),\n" +
			"asks each for its status, and reads consumer workers of MTLSRELAY_CALLS for the calls pending.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := &worker.Config{}
			if configPath != "" {
				var err error
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
			opts, err := natsAuthOptions(natsURL, cfg)
			if err != nil {
				return err
			}
			nc, err := nats.Connect(natsURL, append(opts, nats.Name("mtlsrelay status"))...)
			if err != nil {
				return fmt.Errorf("connect to NATS at %s: %w", redactURL(natsURL), err)
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), wait+10*time.Second)
			defer cancel()
			fleet, err := worker.FleetStatus(ctx, nc, worker.FleetOptions{Prefix: prefix, Wait: wait})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(fleet)
			}
			return printFleet(os.Stdout, fleet, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&natsURL, "nats", "", "NATS URL (default: nats.url of --config, else nats://127.0.0.1:4222)")
	f.StringVar(&configPath, "config", "", "config file whose nats section (URL, credentials, prefix) to use")
	f.StringVar(&prefix, "prefix", "", "subject prefix of the fleet (default mtlsrelay)")
	f.DurationVar(&wait, "wait", 2*time.Second, "how long to wait for workers to answer")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printFleet writes fleet as tables for a person.
func printFleet(out io.Writer, fleet *worker.Fleet, now time.Time) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "WORKERS (%d)\n", len(fleet.Workers))
	if len(fleet.Workers) > 0 {
		fmt.Fprintln(tw, "WORKER\tZONES\tVERSION\tREADY\tIN FLIGHT\tCONCURRENCY\tOK\tNOT OK\tERROR\tRETRIES\tDEAD\tUP")
		for _, w := range fleet.Workers {
			zones := strings.Join(w.Zones, ",")
			if w.Error != "" {
				fmt.Fprintf(tw, "%s\t%s\t%s\t?\t\t%d\t\t\t\t\t\t%s\n", w.Worker, zones, w.Version, w.Concurrency, w.Error)
				continue
			}
			h := w.Handled
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", w.Worker, zones, w.Version, yesNo(w.Ready),
				w.InFlight, w.Concurrency, h.OK, h.NotOK, h.Error, h.Retries, h.DeadLetters, now.Sub(w.Started).Round(time.Second))
		}
	}
	fmt.Fprintln(tw)
	if c := fleet.Consumer; c != nil {
		fmt.Fprintf(tw, "CALLS (consumer %s on %s)\n", c.Consumer, c.Stream)
		fmt.Fprintf(tw, "pending\t%d\tnot yet taken by a worker\n", c.Pending)
		fmt.Fprintf(tw, "ack pending\t%d\trunning, or waiting for a retry\n", c.AckPending)
		fmt.Fprintf(tw, "redelivered\t%d\n", c.Redelivered)
		fmt.Fprintf(tw, "waiting pulls\t%d\n", c.Waiting)
	} else {
		fmt.Fprintf(tw, "CALLS: unknown (%s)\n", fleet.ConsumerError)
	}
	for _, c := range fleet.Partitions {
		fmt.Fprintf(tw, "partition %s\tpending %d, ack pending %d, waiting pulls %d\n", c.Stream, c.Pending, c.AckPending, c.Waiting)
	}
	if len(fleet.Zones) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintf(tw, "ZONES (calls forwarded to a zone, on %s)\n", jobs.StreamZones)
		fmt.Fprintln(tw, "ZONE\tWORKERS\tPENDING\tACK PENDING\tWAITING PULLS")
		for _, z := range fleet.Zones {
			n := 0
			for _, w := range fleet.Workers {
				if slices.Contains(w.Zones, z.Zone) {
					n++
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", z.Zone, n, z.Pending, z.AckPending, z.Waiting)
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CERTIFICATES")
	fmt.Fprintln(tw, "PROFILE\tWORKER\tNOT AFTER\tEXPIRES IN\tSTATE\tSUBJECT")
	for _, w := range fleet.Workers {
		for _, p := range w.Profiles {
			state, notAfter, left := "ok", "-", "-"
			switch {
			case p.NotAfter.IsZero():
				state = "not loaded"
			case p.Expired:
				state = "EXPIRED"
			case p.Expiring:
				state = "expiring soon"
			}
			if !p.NotAfter.IsZero() {
				notAfter = p.NotAfter.UTC().Format(time.RFC3339)
				left = humanDays(p.NotAfter.Sub(now))
			}
			if p.LastError != nil {
				state += "; last load failed: " + string(p.LastError.Code)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Profile, w.Worker, notAfter, left, state, p.Subject)
		}
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// humanDays renders d in days (hours under two days), negative as "ago".
func humanDays(d time.Duration) string {
	ago := d < 0
	if ago {
		d = -d
	}
	s := fmt.Sprintf("%dd", int(d.Hours()/24))
	if d < 48*time.Hour {
		s = fmt.Sprintf("%dh", int(d.Hours()))
	}
	if ago {
		return strings.TrimSpace(s + " ago")
	}
	return s
}
