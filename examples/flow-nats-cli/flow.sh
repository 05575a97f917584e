#!/usr/bin/env bash
# An mtlsrelay flow with nothing but the nats CLI: enqueue COUNT calls on
# JetStream, then read their results from stream MTLSRELAY_RESULTS.
#
#   NATS_URL=nats://127.0.0.1:4222 ./flow.sh [CONNECTION] [COUNT] [CALL_PATH]
#
# Environment: NATS_URL (default nats://127.0.0.1:4222), PREFIX (subject
# prefix, default mtlsrelay), WAIT (how long to wait for results, default 60s),
# NATS (the nats binary, default: nats on PATH).
# Prints one result per line (JSON) and a summary; exits 0 when every call got
# a result, ok or not, and 1 otherwise.
set -euo pipefail

CONNECTION=${1:-partner-api}
COUNT=${2:-5}
CALL_PATH=${3:-echo}
PREFIX=${PREFIX:-mtlsrelay}
WAIT=${WAIT:-60s}
NATS=${NATS:-nats}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}

# One run id per run: every result of this run is kept under
# $PREFIX.results.$RUN.<call id>, so one filter finds them all.
RUN="flow-sh-$(date +%s)-$$"

for i in $(seq 1 "$COUNT"); do
  id="$RUN-$i"
  # Nats-Msg-Id makes the publish idempotent: re-running this line within
  # the stream's duplicate window (2 min) stores the call once.
  "$NATS" pub --quiet "$PREFIX.calls.$CONNECTION" -H "Nats-Msg-Id:$id" \
    "{\"id\":\"$id\",\"path\":\"$CALL_PATH\",\"query\":{\"n\":[\"$i\"]},\"reply_to\":\"$PREFIX.results.$RUN.$id\",\"metadata\":{\"flow\":\"flow.sh\",\"run\":\"$RUN\"}}"
done
echo "run $RUN: enqueued $COUNT calls to $PREFIX.calls.$CONNECTION" >&2

# Read the results from the stream, not from a live subscription: --all starts
# at the beginning of MTLSRELAY_RESULTS, so results stored before this line
# ran (or while this script was away) are delivered too.
out=$("$NATS" sub "$PREFIX.results.$RUN.>" --stream MTLSRELAY_RESULTS --all --raw --count "$COUNT" --wait "$WAIT" 2>/dev/null || true)
printf '%s\n' "$out" | grep '^{' || true

got=$(printf '%s\n' "$out" | grep -c '^{' || true)
ok=$(printf '%s\n' "$out" | grep -c '"ok":true' || true)

# Any single result can also be fetched by its subject later (for 24 h by default):
"$NATS" stream get MTLSRELAY_RESULTS --last-for "$PREFIX.results.$RUN.$RUN-1" >/dev/null 2>&1 \
  && echo "stored result of $RUN-1 found with: nats stream get MTLSRELAY_RESULTS --last-for $PREFIX.results.$RUN.$RUN-1" >&2

echo "$got/$COUNT results, $ok ok"
[ "$got" -eq "$COUNT" ]
