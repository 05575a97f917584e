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
cd "$(dirname "$0")"

out="${MTLSRELAY_BENTHOS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/mtlsrelay/benthos-4.27.0}"
start=$(date +%s)
if [ -x "$out" ] && [ "${1:-}" != "-f" ]; then
	echo "benthos: $out is already built (0s; -f builds it again)"
	exit 0
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp-$$"
trap 'rm -f "$tmp"' EXIT
# Same lock file as internal/bench and internal/toolbuild, when flock(1) is there.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$out.lock"
	flock 9
fi
GOWORK=off go build -ldflags='-s -w' -o "$tmp" .
mv "$tmp" "$out"
echo "benthos: built $out in $(( $(date +%s) - start ))s"
