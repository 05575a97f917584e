package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/outbound/wsdl"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

func newSOAPCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "soap",
		Short: "SOAP tools: describe a connection's WSDL",
	}
	cmd.AddCommand(newSOAPDescribeCmd())
	return cmd
}

func newSOAPDescribeCmd() *cobra.Command {
	var configPath, natsURL, location string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "describe CONNECTION",
		Short: "List a WSDL's services, ports, operations, SOAP versions, SOAPActions and input skeletons",
		Long: `Reads the connection's WSDL as a worker does: its wsdl setting (default "?wsdl"
under base_url), fetched through the connection (client certificate, proxy,
allow_hosts, credentials), following imports and includes. --wsdl reads
another one: a file on this machine, or a URL fetched through the connection.
A call may then name soap.operation instead of soap.action.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := loadConnectionEnv(cmd.Context(), configPath, natsURL)
			if err != nil {
				return err
			}
			defer env.close()
			if _, defined := env.cfg.Connections[args[0]]; !defined && env.natsURL != "" {
				// The connection stays open: the registry's source reads
				// keystores through it.
				nc, err := connectNATS(env.natsURL, env.cfg, "mtlsrelay soap describe", zerolog.Nop())
				if err != nil {
					return fmt.Errorf("connection %s is not in the config file, and the registry at %s cannot be read: %w", args[0], redactURL(env.natsURL), err)
				}
				defer nc.Close()
				if err := addFromRegistry(cmd.Context(), nc, env.cfg, env.sources, env.cat, args[0]); err != nil {
					return err
				}
			}
			resolver := secrets.NewResolver(env.sources)
			desc, err := worker.DescribeWSDL(cmd.Context(), env.cat, resolver, worker.ExecutorOptions(env.cfg, resolver), args[0], location)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(desc)
			}
			printDescription(os.Stdout, desc)
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML config file with the connection and its profile")
	cmd.Flags().StringVar(&natsURL, "nats", "", "NATS URL, to find the connection in the registry (default: nats.url of --config)")
	cmd.Flags().StringVar(&location, "wsdl", "", "read this WSDL instead: a file, or a URL fetched through the connection")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printDescription writes desc for a person: one block per operation,
// with the call's soap fields that name it and its input skeleton. Names,
// addresses and skeletons come from the partner's WSDL: control and
// bidirectional-override characters in them are escaped so they cannot
// rewrite the terminal.
func printDescription(w io.Writer, desc *wsdl.Description) {
	for _, s := range desc.Services {
		for _, p := range s.Ports {
			fmt.Fprintf(w, "service %s, port %s: SOAP %s, binding %s\n  address %s\n", safeText(s.Name), safeText(p.Name), safeText(p.SOAPVersion), safeText(p.Binding), safeText(p.Address))
			for _, op := range p.Operations {
				fmt.Fprintf(w, "\n  operation %s (%s/%s)\n    soap.operation: %s/%s/%s\n    SOAPAction: %q\n    input:\n", safeText(op.Name), safeText(op.Style), safeText(op.Use), safeText(s.Name), safeText(p.Name), safeText(op.Name), op.SOAPAction)
				for _, line := range strings.Split(op.Input, "\n") {
					fmt.Fprintf(w, "      %s\n", safeText(line))
				}
			}
			fmt.Fprintln(w)
		}
	}
}

// safeText escapes control characters (and the Unicode bidirectional
// overrides) in partner-controlled text as \uXXXX.
func safeText(s string) string {
	if !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unsafeRune(r) {
			fmt.Fprintf(&b, "\\u%04x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == utf8.RuneError
}
