#!/bin/sh
# Builds Ory Hydra v2.3.0 (a real OAuth2 server, Apache-2.0) from the Go
# module proxy into the cache path internal/testhydra looks at, so the
# integration tests start a real Hydra without building it themselves. The
# module here pins every dependency (go.sum), with the replace Hydra's own
# go.mod carries (github.com/gobuffalo/pop/v6 => github.com/ory/pop/v6).
# The in-memory store is SQLite: cgo and a C compiler (gcc) are needed.
#
#   internal/testhydra/tools/build.sh        # build unless already built
#   internal/testhydra/tools/build.sh -f     # build again
#
# The output path is $MTLSRELAY_HYDRA_BIN, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/mtlsrelay/hydra-2.3.0 (Go's os.UserCacheDir).
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir"
out="${MTLSRELAY_HYDRA_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/mtlsrelay/hydra-2.3.0}"
export CGO_ENABLED=1
exec sh "$dir/../../../internal/toolbuild/build.sh" hydra "$out" "$@" -- -tags sqlite,sqlite_omit_load_extension github.com/ory/hydra/v2
