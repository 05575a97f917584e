#!/bin/sh
# Builds Benthos v4.27.0 (MIT, github.com/benthosdev/benthos) with only the
# components of `mtlsrelay bench --peer` (nats, io, pure: see main.go) from
# the Go module proxy into the cache path internal/bench looks at, so the
# bench and its tests start a real Benthos without building it themselves
# (they build it on first use otherwise). About a minute with a warm Go
# module cache; a 26 MB binary. The module here pins every dependency
# (go.sum); it is not mtlsrelay's module.
#
#   internal/bench/tools/benthos/build.sh        # build unless already built
#   internal/bench/tools/benthos/build.sh -f     # build again
#
# The output path is $MTLSRELAY_BENTHOS_BIN, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/mtlsrelay/benthos-4.27.0 (Go's os.UserCacheDir).
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir"
out="${MTLSRELAY_BENTHOS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/mtlsrelay/benthos-4.27.0}"
exec sh "$dir/../../../../internal/toolbuild/build.sh" benthos "$out" "$@" -- .
