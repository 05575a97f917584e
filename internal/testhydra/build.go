package testhydra

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/toolbuild"
)

// hydra builds Ory Hydra from tools/: the in-memory store is SQLite, so
// cgo and the sqlite tags.
var hydra = &toolbuild.Tool{
	Name: "hydra", Title: "Ory Hydra", Version: Version, BinaryEnv: BinaryEnv,
	Dir: ToolsDir(), Package: "github.com/ory/hydra/v2",
	Tags: []string{"sqlite", "sqlite_omit_load_extension"}, Env: []string{"CGO_ENABLED=1"},
	Takes: "minutes: the module proxy, then cgo for SQLite",
}

// Binary returns the path of the Hydra binary, building it into the user's
// cache directory when it is not there yet.
func Binary(t testing.TB) string { return hydra.Binary(t) }

// CachePath is where a built binary is kept: os.UserCacheDir()/mtlsrelay/hydra-2.3.0.
func CachePath() (string, error) { return hydra.CachePath() }

// ToolsDir is the module that pins Hydra and its dependencies.
func ToolsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "tools")
}
