// Command vault is HashiCorp Vault's own CLI and server, built from the Go
// module proxy so that the integration tests can start a real Vault in dev
// mode. It lives in a module of its own: the product never depends on Vault's
// server code (BUSL), only on github.com/hashicorp/vault/api (MPL).
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
