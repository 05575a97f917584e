// Command mtlsrelay runs mtlsrelay workers and talks to them: serve, call,
// test, keystore inspect and demo. It parses flags and wires packages
// together; the logic lives in the packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "mtlsrelay",
		Short:         "Relay REST and SOAP calls over mutual TLS, from NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newCallCmd(), newTestCmd(), newKeystoreCmd(), newDemoCmd(), newProfileCmd(), newConnectionCmd(), newBenchCmd(), newStatusCmd(), newSOAPCmd())
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mtlsrelay:", err)
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		os.Exit(1)
	}
}

// exitCode is an error that asks for a particular exit status.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
