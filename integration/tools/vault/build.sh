#!/bin/sh
# Builds HashiCorp Vault v1.19.0's server from the Go module proxy into the
# cache path internal/testvault looks at, so integration tests start a real
# Vault without building it themselves. About 6 minutes on 2 cores the first
# time, seconds with a warm Go build cache.
#
#   integration/tools/vault/build.sh        # build unless already built
#   integration/tools/vault/build.sh -f     # build again
#
# The output path is $MTLSRELAY_VAULT_BIN, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/mtlsrelay/vault-1.19.0 (Go's os.UserCacheDir).
set -eu
cd "$(dirname "$0")"

out="${MTLSRELAY_VAULT_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/mtlsrelay/vault-1.19.0}"
start=$(date +%s)
if [ -x "$out" ] && [ "${1:-}" != "-f" ]; then
	echo "vault: $out is already built (0s; -f builds it again)"
	exit 0
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp-$$"
trap 'rm -f "$tmp"' EXIT
# Same lock file as internal/testvault, when flock(1) is there.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$out.lock"
	flock 9
fi
GOWORK=off go build -ldflags='-s -w' -o "$tmp" .
mv "$tmp" "$out"
echo "vault: built $out in $(( $(date +%s) - start ))s"
