#!/usr/bin/env bash
# Hostile load (issue 14): Herald with its DEFAULT limits (only the per-address limits apply to
# the floods, which come from 127.0.0.2; normal users connect from 127.0.0.1), normal users
# chatting at a fixed rate and logging in steadily, first quiet, then under every flood of
# `herald-bench hostile`. Prints the table (quiet vs hostile p99, logins, peak RSS, what each
# flood did) and keeps the JSON.
#
#   bash bench/hostile.sh                    # 20 pairs at 200 msgs/s, 20 s per phase
#   SECS=60 PAIRS=50 RATE=500 bash bench/hostile.sh
#   FLOODS=mam,queue bash bench/hostile.sh   # some floods only
#   ATTACKER_NICE=19 bash bench/hostile.sh   # floods in a child process at nice 19, standing in
#                                            # for an attacker on another machine (2-core box)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

SECS=${SECS:-20}
PAIRS=${PAIRS:-20}
RATE=${RATE:-200}
FLOODS=${FLOODS:-}
HERALD=${HERALD:-target/release/herald}
BENCH=${BENCH:-target/release/herald-bench}
[ -x "$HERALD" ] && [ -x "$BENCH" ] || cargo build --release -p herald -p herald-bench

DIR=$(mktemp -d /tmp/herald-hostile.XXXXXX)
trap 'stop_started; [ -n "${KEEP_DATA:-}" ] || rm -rf "$DIR"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$DIR/herald.toml" <<TOML
domain = "localhost"
data_dir = "$DIR/data"
[c2s]
listen = "127.0.0.1:$PORT"
direct_tls_listen = ""
require_encryption = false
[components]
listen = ""
# No HTTP: the benchmark measures XMPP (and 5443 may be another server's).
[http]
listen = ""
TOML
ulimit -n "$(ulimit -Hn)"
USERS=$((PAIRS * 2 + 20))
"$HERALD" user add-bulk bench "$USERS" bench --config "$DIR/herald.toml" >/dev/null
"$HERALD" serve --config "$DIR/herald.toml" >"$DIR/herald.out" 2>&1 &
HERALD_PID=$!
STARTED_PIDS+=("$HERALD_PID")
wait_port "$PORT" 20 || { tail -n 20 "$DIR/herald.out" >&2; exit 1; }
OUT=${OUT:-$DIR/hostile.json}
args=(hostile --port "$PORT" --password bench --pairs "$PAIRS" --rate "$RATE" --duration "$SECS"
	--server-pid "$HERALD_PID" --json "$OUT")
[ -n "$FLOODS" ] && args+=(--floods "$FLOODS")
[ -n "${ATTACKER_NICE:-}" ] && args+=(--attacker-nice "$ATTACKER_NICE")
"$BENCH" "${args[@]}"
log "server log: $(grep -c . "$DIR/herald.out") lines, $(grep -c ' WARN ' "$DIR/herald.out" || true) warnings"
log "json: $OUT"
