#!/usr/bin/env bash
# Restart with N saved sessions (issue 11): N clients hold XEP-0198 sessions with resumption
# (herald-bench idle --sm); the server is stopped with SIGTERM (it saves every session), then
# started again on the same data (it restores them before accepting). Reports how long the stop
# took and how long start-up spent restoring, from the server's own log line
# "sessions of the previous run … ms=…".
#
#   bash bench/restore.sh            # N=10000, release binaries (built if missing)
#   N=2000 bash bench/restore.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

N=${N:-10000}
HERALD=${HERALD:-target/release/herald}
BENCH=${BENCH:-target/release/herald-bench}
[ -x "$HERALD" ] && [ -x "$BENCH" ] || cargo build --release -p herald -p herald-bench

DIR=$(mktemp -d /tmp/herald-restore.XXXXXX)
trap 'stop_started; [ -n "${KEEP_DATA:-}" ] || rm -rf "$DIR"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$DIR/herald.toml" <<TOML
domain = "localhost"
data_dir = "$DIR/data"
shutdown_timeout = "60s"
[c2s]
listen = "127.0.0.1:$PORT"
direct_tls_listen = ""
require_encryption = false
[components]
listen = ""
# No HTTP: the benchmark measures XMPP (and 5443 may be another server's).
[http]
listen = ""
# Every benchmark client connects from 127.0.0.1: the per-address limits would refuse them.
[limits]
max_connections = 1000000
max_connections_per_ip = 1000000
max_unauthenticated_per_ip = 1000000
# Throughput runs: no inbound rate limit (Prosody loads no mod_limits by default either).
c2s_stanzas_per_second = 0
c2s_bytes_per_second = 0
connection_rate_per_ip = 0
TOML
ulimit -n "$(ulimit -Hn)"
"$HERALD" user add-bulk bench "$N" bench --config "$DIR/herald.toml" >/dev/null

serve() {
	RUST_LOG=info NO_COLOR=1 "$HERALD" serve --config "$DIR/herald.toml" >>"$DIR/server.log" 2>&1 &
	SERVER=$!
	STARTED_PIDS+=("$SERVER")
	wait_port "$PORT" 60 || { log "server did not start"; tail "$DIR/server.log"; exit 1; }
}

serve
log "holding $N sessions with XEP-0198 resumption"
"$BENCH" idle --port "$PORT" -n "$N" --sm --user-prefix bench --password bench \
	--server-pid "$SERVER" --hold 600 >"$DIR/idle.out" 2>"$DIR/idle.err" &
IDLE=$!
STARTED_PIDS+=("$IDLE")
for _ in $(seq 600); do grep -q "^holding" "$DIR/idle.err" && break; sleep 0.5; done
grep "^holding" "$DIR/idle.err" >&2 || { log "the sessions never came up"; tail "$DIR/idle.err"; exit 1; }

t0=$(date +%s.%N)
kill -TERM "$SERVER"
wait "$SERVER" || true
t1=$(date +%s.%N)
kill -KILL "$IDLE" 2>/dev/null || true
saved=$(sed -n "s/.*saved_sessions=\([0-9]*\).*/\1/p" "$DIR/server.log" | tail -1)

t2=$(date +%s.%N)
serve
for _ in $(seq 600); do grep -q "sessions of the previous run" "$DIR/server.log" && break; sleep 0.1; done
t3=$(date +%s.%N)
line=$(grep "sessions of the previous run" "$DIR/server.log" | tail -1)
restored=$(sed -n 's/.*restored=\([0-9]*\).*/\1/p' <<<"$line")
ms=$(sed -n 's/.* ms=\([0-9]*\).*/\1/p' <<<"$line")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")
printf 'sessions %s | saved at stop %s | stop took %.2f s | restored %s | restore %s ms | start to restored %.2f s | RSS after restore %s KiB\n' \
	"$N" "$saved" "$(echo "$t1 - $t0" | bc)" "$restored" "$ms" "$(echo "$t3 - $t2" | bc)" "$rss"
