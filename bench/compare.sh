#!/usr/bin/env bash
# Side-by-side benchmark: Prosody (Debian package) and Herald on loopback, same users, same
# scenarios, same client (herald-bench), then each figure for both and the ratio Herald/Prosody.
# Bounded in count and time; every process it starts is stopped on exit (trap).
#
# Usage: bench/compare.sh            (defaults finish in a few minutes)
# Scale with env vars, e.g.: LOGIN_N=5000 IDLE_N=10000 MSG_SECS=20 PUSH_N=2000 bench/compare.sh
#   HERALD=path/to/herald   (default: target/release/herald; missing => Herald half skipped)
#   ONLY=prosody|herald     run one side only
#   TLS=none|starttls       c2s security for every scenario (default none)
#   AUTH=scram-sha1|plain   SASL mechanism (default scram-sha1)
#   PROSODY_MAM=internal|sql|off   Prosody archive storage (default internal; see BENCHMARKS.md)
#   PUSH_RATE=n             messages/s of the second push run (default 200; the first is a burst)
#   OUT=dir                 where JSON results go (default: a temp dir, printed at the end)
#   KEEP_DATA=1             keep both servers' data directories (about 300 MB) after the run
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

LOGIN_N=${LOGIN_N:-2000}
LOGIN_C=${LOGIN_C:-50}
IDLE_N=${IDLE_N:-2000}
MSG_PAIRS=${MSG_PAIRS:-20}
MSG_SECS=${MSG_SECS:-10}
MSG_RATE=${MSG_RATE:-1000}
PUSH_N=${PUSH_N:-300}
PUSH_RATE=${PUSH_RATE:-200}
TLS=${TLS:-none}
AUTH=${AUTH:-scram-sha1}
ONLY=${ONLY:-}
BENCH_PREFIX=${BENCH_PREFIX:-bench}
BENCH_PASSWORD=${BENCH_PASSWORD:-bench-pass}
COMPONENT_SECRET=${COMPONENT_SECRET:-bench-secret}
PROSODY_C2S_PORT=${PROSODY_C2S_PORT:-15222}
PROSODY_COMPONENT_PORT=${PROSODY_COMPONENT_PORT:-15347}
HERALD_C2S_PORT=${HERALD_C2S_PORT:-25222}
HERALD_TLS_PORT=${HERALD_TLS_PORT:-25223}
HERALD_COMPONENT_PORT=${HERALD_COMPONENT_PORT:-25347}
HERALD=${HERALD:-$ROOT/target/release/herald}
export BENCH_PREFIX BENCH_PASSWORD COMPONENT_SECRET PROSODY_C2S_PORT PROSODY_COMPONENT_PORT \
	HERALD_C2S_PORT HERALD_TLS_PORT HERALD_COMPONENT_PORT HERALD

# Disjoint user ranges so one scenario's leftovers (archives, push registrations, hibernated
# sessions) never touch another's: idle | messages (two runs) | push (two runs, +1 sender each).
IDLE_OFF=0
MSG_OFF=$IDLE_N
MSG_OFF2=$((MSG_OFF + 2 * MSG_PAIRS))
PUSH_OFF=$((MSG_OFF2 + 2 * MSG_PAIRS))
PUSH_OFF2=$((PUSH_OFF + PUSH_N + 1))
USERS=$((PUSH_OFF2 + PUSH_N + 1))
((USERS >= LOGIN_N)) || USERS=$LOGIN_N

WORK=$(mktemp -d /tmp/herald-compare.XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
cleanup() {
	stop_started
	# The stores hold every benchmark message; repeated runs filled the disk when they stayed.
	[[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$WORK"/herald/data "$WORK"/prosody/data
	log "results in $OUT; server logs in $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BENCH_BIN=${BENCH_BIN:-}
if [[ -z $BENCH_BIN ]]; then
	log "building herald-bench (release)"
	(cd "$ROOT" && cargo build --release -q -p herald-bench)
	BENCH_BIN=$ROOT/target/release/herald-bench
	[[ -n ${CARGO_TARGET_DIR:-} ]] && BENCH_BIN=$CARGO_TARGET_DIR/release/herald-bench
fi
export BENCH_BIN

# run_all NAME PORT COMPONENT_PORT PID: the same scenarios, in the same order, for one server.
run_all() {
	local name=$1 port=$2 cport=$3 pid=$4
	local common=(--port "$port" --domain localhost --user-prefix "$BENCH_PREFIX"
		--password "$BENCH_PASSWORD" --tls "$TLS" --auth "$AUTH" --server-pid "$pid")
	log "[$name] login: $LOGIN_N logins, $LOGIN_C in flight"
	timeout 300 "$BENCH_BIN" login "${common[@]}" -n "$LOGIN_N" -c "$LOGIN_C" \
		--json "$OUT/$name-login.json"
	log "[$name] idle: $IDLE_N sessions with stream management"
	timeout 300 "$BENCH_BIN" idle "${common[@]}" --offset "$IDLE_OFF" -n "$IDLE_N" --sm \
		--json "$OUT/$name-idle.json"
	log "[$name] messages: $MSG_PAIRS pairs flat out for ${MSG_SECS}s"
	timeout 300 "$BENCH_BIN" messages "${common[@]}" --offset "$MSG_OFF" -p "$MSG_PAIRS" \
		-d "$MSG_SECS" --json "$OUT/$name-messages.json"
	# A second scenario name so compare lines the two message runs up separately.
	log "[$name] messages: $MSG_PAIRS pairs at $MSG_RATE msgs/s for ${MSG_SECS}s"
	timeout 300 "$BENCH_BIN" messages "${common[@]}" --offset "$MSG_OFF2" -p "$MSG_PAIRS" \
		-r "$MSG_RATE" -d "$MSG_SECS" --json "$OUT/$name-messages-rate.json"
	sed -i 's/"scenario": "messages"/"scenario": "msg-rate"/' "$OUT/$name-messages-rate.json"
	log "[$name] push: $PUSH_N hibernated users"
	timeout 300 "$BENCH_BIN" push "${common[@]}" --offset "$PUSH_OFF" -n "$PUSH_N" \
		--component-domain push.localhost --component-secret "$COMPONENT_SECRET" \
		--component-port "$cport" --json "$OUT/$name-push.json"
	# The burst above measures how fast one sender's messages get through; this one measures
	# the latency of a push for a single message to a sleeping device.
	log "[$name] push: $PUSH_N hibernated users, messages at $PUSH_RATE/s"
	timeout 300 "$BENCH_BIN" push "${common[@]}" --offset "$PUSH_OFF2" -n "$PUSH_N" \
		-r "$PUSH_RATE" --component-domain push.localhost --component-secret "$COMPONENT_SECRET" \
		--component-port "$cport" --json "$OUT/$name-push-rate.json"
	sed -i 's/"scenario": "push"/"scenario": "push-rate"/' "$OUT/$name-push-rate.json"
}

if [[ $ONLY != herald ]]; then
	mkdir -p "$WORK/prosody"
	prosody_start "$WORK/prosody" "$USERS"
	run_all prosody "$PROSODY_C2S_PORT" "$PROSODY_COMPONENT_PORT" "$PROSODY_PID"
	stop_started
fi

if [[ $ONLY != prosody ]]; then
	if [[ -x $HERALD ]]; then
		mkdir -p "$WORK/herald"
		herald_start "$WORK/herald" "$USERS"
		run_all herald "$HERALD_C2S_PORT" "$HERALD_COMPONENT_PORT" "$HERALD_PID"
		stop_started
	else
		log "herald binary not found at $HERALD (build it: cargo build --release -p herald, or set HERALD=...); skipping the Herald half"
	fi
fi

echo
echo "== Herald / Prosody (TLS=$TLS, AUTH=$AUTH, Prosody MAM=${PROSODY_MAM:-internal})"
left=() right=()
for s in login idle messages messages-rate push push-rate; do
	[[ -f $OUT/prosody-$s.json ]] && left+=("$OUT/prosody-$s.json")
	[[ -f $OUT/herald-$s.json ]] && right+=("$OUT/herald-$s.json")
done
if ((${#left[@]})); then
	"$BENCH_BIN" compare --left-name prosody --right-name herald --left "${left[@]}" --right "${right[@]}"
else
	log "no Prosody results to compare against (ONLY=herald): see $OUT"
fi
