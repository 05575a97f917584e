#!/bin/sh
# Builds one of the servers the tests and the bench run into the user's
# cache, once, as internal/toolbuild does from Go (same paths, same lock
# files): the tools' own build.sh scripts call it from their module's
# directory.
#
#   sh internal/toolbuild/build.sh NAME OUT [-f] -- GO-BUILD-ARGS...
#
# NAME names the tool in messages; OUT is the binary's path; -f builds it
# again even when OUT is there. The go build runs with GOWORK=off and
# -ldflags='-s -w' besides GO-BUILD-ARGS, into a temporary file renamed
# into place, under flock(1) on OUT.lock when flock is there.
set -eu
name=$1 out=$2
shift 2
force=
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
	case $1 in
	-f) force=1 ;;
	*) echo "$name: unknown argument $1 (-f builds again)" >&2; exit 2 ;;
	esac
	shift
done
if [ "${1:-}" = "--" ]; then shift; fi

start=$(date +%s)
built() { [ -f "$out" ] && [ -x "$out" ] && [ -z "$force" ]; }
if built; then
	echo "$name: $out is already built (0s; -f builds it again)"
	exit 0
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp-$$"
trap 'rm -f "$tmp"' EXIT
if command -v flock >/dev/null 2>&1; then
	exec 9>"$out.lock"
	flock 9
	if built; then # built by another process while this one waited
		echo "$name: $out was built meanwhile ($(( $(date +%s) - start ))s)"
		exit 0
	fi
fi
GOWORK=off go build -ldflags='-s -w' -o "$tmp" "$@"
mv "$tmp" "$out"
echo "$name: built $out in $(( $(date +%s) - start ))s"
