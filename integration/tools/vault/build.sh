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
dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir"
out="${MTLSRELAY_VAULT_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/mtlsrelay/vault-1.19.0}"
exec sh "$dir/../../../internal/toolbuild/build.sh" vault "$out" "$@" -- .
