// Command benthos is Benthos v4 (MIT, github.com/benthosdev/benthos) with
// only the components the bench's peer phase uses: nats_jetstream input
// and output (nats), the http processor (io) and the pure ones (pure).
// internal/bench builds it into the user's cache directory; it is never
// part of mtlsrelay's own module (this folder is a module of its own).
package main

import (
	"context"

	_ "github.com/benthosdev/benthos/v4/public/components/io"
	_ "github.com/benthosdev/benthos/v4/public/components/nats"
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
	"github.com/benthosdev/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
