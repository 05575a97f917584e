package main

import (
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

func newTestCmd() *cobra.Command {
	var configPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test CONNECTION",
		Short: "Check a connection end to end: keystore, certificate expiry, server chain, TLS version, acceptance",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			cat := &worker.Catalog{Profiles: cfg.Profiles, Connections: cfg.Connections}
			sources, closeSources, err := secretSources(cmd.Context(), cfg, zerolog.Nop())
			if err != nil {
				return err
			}
			defer closeSources()
			resolver := secrets.NewResolver(sources)
			rep := worker.Probe(cmd.Context(), cat, resolver, args[0])
			if asJSON {
				if err := printJSON(rep); err != nil {
					return err
				}
			} else {
				for _, s := range rep.Steps {
					mark := "ok  "
					if !s.OK {
						mark = "FAIL"
					}
					fmt.Fprintf(os.Stdout, "%s %-18s %s\n", mark, s.Name, s.Detail)
				}
			}
			if rep.Error != nil {
				return exitCode(2)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML config file with the connection and its profile")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
