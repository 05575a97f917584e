package main

import (
	"os"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/internal/demo"
	"github.com/mtlsrelay/mtlsrelay/internal/logging"
)

func newDemoCmd() *cobra.Command {
	var logLevel string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole loop on this machine: NATS, an mTLS partner, a keystore, a worker and a few calls",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := zerolog.Nop()
			if logLevel != "" {
				l, err := logging.New(os.Stderr, logLevel, "")
				if err != nil {
					return err
				}
				log = l
			}
			_, err := demo.Run(cmd.Context(), demo.Options{Out: os.Stdout, Log: log})
			return err
		},
	}
	cmd.Flags().StringVar(&logLevel, "log-level", "", "also show the worker's log at this level (debug, info, ...)")
	return cmd
}
