package bench

import (
	"path/filepath"
	"runtime"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mtlsrelay/mtlsrelay/internal/toolbuild"
)

// The programs a run starts as processes of their own, built from the Go
// module proxy once, into the user's cache directory, as internal/toolbuild
// builds the test servers (same cache paths, same lock files, so a test
// that builds one through toolbuild and a run share the binary).
const (
	// BenthosVersion is the Benthos release of the peer phase, pinned in
	// tools/benthos/go.mod.
	BenthosVersion = "4.27.0"
	// BenthosBinaryEnv names a prebuilt Benthos binary to use instead.
	BenthosBinaryEnv = "MTLSRELAY_BENTHOS_BIN"
	// NATSServerBinaryEnv names a prebuilt nats-server binary to use
	// instead of the one built from mtlsrelay's own go.mod.
	NATSServerBinaryEnv = "MTLSRELAY_NATS_SERVER_BIN"
)

// NATSServerVersion is the nats-server the bench runs as a process: the
// one mtlsrelay's go.mod requires (and embeds), built from the same module.
var NATSServerVersion = server.VERSION

// BenthosTool is Benthos with the peer phase's components only
// (tools/benthos: nats, io, pure), its own module.
func BenthosTool() *toolbuild.Tool { return benthosTool }

var benthosTool = &toolbuild.Tool{
	Name: "benthos", Title: "Benthos", Version: BenthosVersion, BinaryEnv: BenthosBinaryEnv,
	Dir: filepath.Join(sourceDir(), "tools", "benthos"), Package: ".",
	Takes: "about a minute with a warm Go module cache, a few more to download it",
}

// NATSServerTool is nats-server built from mtlsrelay's module, at the
// version go.mod requires.
func NATSServerTool() *toolbuild.Tool { return natsServerTool }

var natsServerTool = &toolbuild.Tool{
	Name: "nats-server", Title: "nats-server", Version: NATSServerVersion, BinaryEnv: NATSServerBinaryEnv,
	Dir: filepath.Join(sourceDir(), "..", ".."), Package: "github.com/nats-io/nats-server/v2",
	Takes: "about half a minute",
}

// sourceDir is this package's source folder: the tools are built from the
// source tree (go run, go test); a binary built elsewhere needs the
// variables naming prebuilt ones.
func sourceDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}
