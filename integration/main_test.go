package integration

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// TestMain runs the end-to-end tests, except under -short: they start real
// NATS servers and clusters, Vault, partners and the built binary, and
// -short is the unit tests alone (see docs/ARCHITECTURE.md, Tests).
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("integration: end-to-end tests are not run under -short")
		os.Exit(0)
	}
	os.Exit(m.Run())
}
