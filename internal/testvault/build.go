package testvault

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/toolbuild"
)

// vault builds the Vault server from integration/tools/vault.
var vault = &toolbuild.Tool{
	Name: "vault", Title: "Vault", Version: Version, BinaryEnv: BinaryEnv,
	Dir: toolsDir(), Package: ".", Takes: "about 6 minutes on 2 cores",
}

func toolsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "integration", "tools", "vault")
}

// Binary returns the path of the Vault server binary, building it into the
// user's cache directory when it is not there yet.
func Binary(t testing.TB) string { return vault.Binary(t) }

// CachePath is where a built binary is kept: os.UserCacheDir()/mtlsrelay/vault-1.19.0.
func CachePath() (string, error) { return vault.CachePath() }
