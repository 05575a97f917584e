package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/secrets"
)

func newKeystoreCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keystore", Short: "Work with keystores"}
	var passwordEnv, passwordFile string
	var asJSON bool
	inspect := &cobra.Command{
		Use:   "inspect FILE",
		Short: "List a keystore's entries, chains and expiry dates (PKCS#12, JKS or PEM)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			password, err := readPassword(passwordEnv, passwordFile)
			if err != nil {
				return err
			}
			ks, err := secrets.DecodeKeystore(data, password)
			if err != nil {
				return err
			}
			entries := secrets.Describe(ks)
			if asJSON {
				return printJSON(map[string]any{"format": ks.Format, "entries": entries})
			}
			writeEntries(os.Stdout, ks.Format, entries, time.Now())
			return nil
		},
	}
	f := inspect.Flags()
	f.StringVar(&passwordEnv, "password-env", "", "environment variable holding the keystore password")
	f.StringVar(&passwordFile, "password-file", "", "file holding the keystore password")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(inspect)
	return cmd
}

// readPassword reads a password from an environment variable or a file; a
// password is never taken as a flag value, where it would show in ps.
func readPassword(env, file string) ([]byte, error) {
	switch {
	case env != "" && file != "":
		return nil, fmt.Errorf("give --password-env or --password-file, not both")
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return nil, fmt.Errorf("environment variable %s is not set", env)
		}
		return []byte(v), nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	return nil, nil
}

func writeEntries(out io.Writer, format string, entries []secrets.EntryInfo, now time.Time) {
	fmt.Fprintf(out, "format: %s, %d entries\n\n", format, len(entries))
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ALIAS\tKIND\tSUBJECT\tSERIAL\tKEY\tNOT AFTER\tSTATUS")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Alias, e.Kind, e.Subject, e.Serial, e.KeyAlgorithm,
			e.NotAfter.Format(time.DateOnly), validity(e.NotBefore, e.NotAfter, now))
		for i, c := range e.Chain {
			if i == 0 {
				continue
			}
			fmt.Fprintf(tw, "\t  chain[%d]\t%s\t%s\t\t%s\t%s\n", i, c.Subject, c.Serial, c.NotAfter.Format(time.DateOnly), validity(c.NotBefore, c.NotAfter, now))
		}
	}
	tw.Flush()
}

func validity(notBefore, notAfter, now time.Time) string {
	switch {
	case now.After(notAfter):
		return "EXPIRED " + now.Sub(notAfter).Truncate(time.Hour).String() + " ago"
	case now.Before(notBefore):
		return "NOT YET VALID (from " + notBefore.Format(time.RFC3339) + ")"
	default:
		return fmt.Sprintf("valid, %d days left", int(notAfter.Sub(now).Hours()/24))
	}
}
