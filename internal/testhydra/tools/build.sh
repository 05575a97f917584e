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
cd "$(dirname "$0")"

out="${MTLSRELAY_HYDRA_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/mtlsrelay/hydra-2.3.0}"
start=$(date +%s)
if [ -x "$out" ] && [ "${1:-}" != "-f" ]; then
	echo "hydra: $out is already built (0s; -f builds it again)"
	exit 0
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp-$$"
trap 'rm -f "$tmp"' EXIT
# Same lock file as internal/testhydra, when flock(1) is there.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$out.lock"
	flock 9
fi
GOWORK=off CGO_ENABLED=1 go build -tags sqlite,sqlite_omit_load_extension -ldflags='-s -w' -o "$tmp" github.com/ory/hydra/v2
mv "$tmp" "$out"
echo "hydra: built $out in $(( $(date +%s) - start ))s"
