#!/usr/bin/env bash
# Side-by-side benchmark: Prosody and ejabberd (Debian packages) and Herald on loopback, same
# users, same scenarios, same client (herald-bench), then each figure for the three servers and
# the ratios Herald/Prosody and Herald/ejabberd. Bounded in count and time; every process it
# starts is stopped on exit (trap).
#
# Usage: bench/compare.sh            (defaults finish in about five minutes)
# Scale with env vars, e.g.: LOGIN_N=5000 IDLE_N=10000 MSG_SECS=20 PUSH_N=2000 bench/compare.sh
#   HERALD=path/to/herald   (default: target/release/herald; missing => Herald column skipped)
#   ONLY=prosody|ejabberd|herald   run some servers only (a comma list: ONLY=ejabberd,herald)
#   TLS=none|starttls       c2s security for every scenario (default none)
#   AUTH=scram-sha1|plain   SASL mechanism (default scram-sha1)
#   PROSODY_MAM=internal|sql|off   Prosody archive storage (default internal; see BENCHMARKS.md);
#                           off also turns MAM off on ejabberd and Herald
#   PUSH_RATE=n             messages/s of the second push run (default 200; the first is a burst)
#   OUT=dir                 where JSON results go (default: a temp dir, printed at the end)
#   KEEP_DATA=1             keep the servers' data directories (about 300 MB) after the run
# ejabberd (apt-get install ejabberd; missing => its column skipped) runs from the Debian
# package's code with a generated config (bench/ejabberd.yml.in) and its own mnesia spool in the
# temp dir, in the foreground under this script, without ejabberdctl (see bench/lib.sh).
# Ports: PROSODY_C2S_PORT/PROSODY_COMPONENT_PORT (15222/15347), EJABBERD_C2S_PORT/
# EJABBERD_COMPONENT_PORT (35222/35347), HERALD_C2S_PORT/HERALD_COMPONENT_PORT (25222/25347).
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
export TLS

# Disjoint user ranges so one scenario's leftovers (archives, push registrations, hibernated
# sessions) never touch another's: idle | messages (two runs) | push (two runs, +1 sender each).
IDLE_OFF=0
MSG_OFF=$IDLE_N
MSG_OFF2=$((MSG_OFF + 2 * MSG_PAIRS))
PUSH_OFF=$((MSG_OFF2 + 2 * MSG_PAIRS))
PUSH_OFF2=$((PUSH_OFF + PUSH_N + 1))
# wake: a phone and its sender per run (legacy and 100 ms legacy everywhere, FAST on Herald).
WAKE_OFF=$((PUSH_OFF2 + PUSH_N + 1))
USERS=$((WAKE_OFF + 8))
((USERS >= LOGIN_N)) || USERS=$LOGIN_N

runner_setup compare

# run_all NAME PORT COMPONENT_PORT PID: the same scenarios, in the same order, for one server.
run_all() {
	local name=$1 port=$2 cport=$3 pid=$4
	SERVER_PID=$pid
	local common=(--port "$port" --domain localhost --user-prefix "$BENCH_PREFIX"
		--password "$BENCH_PASSWORD" --tls "$TLS" --auth "$AUTH" --server-pid "$pid")
	local push=(--component-domain push.localhost --component-secret "$COMPONENT_SECRET"
		--component-port "$cport")
	log "[$name] login: $LOGIN_N logins, $LOGIN_C in flight"
	bench "$name" login login "${common[@]}" -n "$LOGIN_N" -c "$LOGIN_C" \
		--json "$OUT/$name-login.json"
	log "[$name] idle: $IDLE_N sessions with stream management"
	bench "$name" idle idle "${common[@]}" --offset "$IDLE_OFF" -n "$IDLE_N" --sm \
		--json "$OUT/$name-idle.json"
	log "[$name] messages: $MSG_PAIRS pairs flat out for ${MSG_SECS}s"
	bench "$name" messages messages "${common[@]}" --offset "$MSG_OFF" -p "$MSG_PAIRS" \
		-d "$MSG_SECS" --json "$OUT/$name-messages.json"
	log "[$name] messages: $MSG_PAIRS pairs at $MSG_RATE msgs/s for ${MSG_SECS}s"
	bench "$name" msg-rate messages "${common[@]}" --offset "$MSG_OFF2" -p "$MSG_PAIRS" \
		-r "$MSG_RATE" -d "$MSG_SECS" --json "$OUT/$name-messages-rate.json"
	rename "$OUT/$name-messages-rate.json" messages msg-rate
	log "[$name] push: $PUSH_N hibernated users"
	bench "$name" push push "${common[@]}" --offset "$PUSH_OFF" -n "$PUSH_N" "${push[@]}" \
		--json "$OUT/$name-push.json"
	# The burst above measures how fast one sender's messages get through; this one measures
	# the latency of a push for a single message to a sleeping device.
	log "[$name] push: $PUSH_N hibernated users, messages at $PUSH_RATE/s"
	bench "$name" push-rate push "${common[@]}" --offset "$PUSH_OFF2" -n "$PUSH_N" \
		-r "$PUSH_RATE" "${push[@]}" --json "$OUT/$name-push-rate.json"
	rename "$OUT/$name-push-rate.json" push push-rate
	# issue 18: a hibernated phone woken by its push, reconnecting through the bench's proxy
	# (loopback, then 50 ms each way); the FAST run only where SASL2 + FAST is offered.
	log "[$name] wake: legacy SASL + resume, loopback and 100 ms RTT"
	bench "$name" wake wake "${common[@]}" --offset "$WAKE_OFF" -n 20 "${push[@]}" \
		--json "$OUT/$name-wake.json"
	bench "$name" wake-100ms wake "${common[@]}" --offset "$((WAKE_OFF + 2))" -n 10 \
		--delay-ms 50 "${push[@]}" --json "$OUT/$name-wake-100ms.json"
	rename "$OUT/$name-wake-100ms.json" wake wake-100ms
	if [[ $name == herald ]]; then
		log "[$name] wake: SASL2 + FAST + inline resume, loopback and 100 ms RTT"
		bench "$name" wake-fast wake "${common[@]}" --offset "$((WAKE_OFF + 4))" -n 20 \
			--mode fast "${push[@]}" --json "$OUT/$name-wake-fast.json"
		rename "$OUT/$name-wake-fast.json" wake wake-fast
		bench "$name" wake-fast-100ms wake "${common[@]}" --offset "$((WAKE_OFF + 6))" -n 10 \
			--mode fast --delay-ms 50 "${push[@]}" --json "$OUT/$name-wake-fast-100ms.json"
		rename "$OUT/$name-wake-fast-100ms.json" wake wake-fast-100ms
	fi
}

if wanted prosody; then
	mkdir -p "$WORK/prosody"
	prosody_start "$WORK/prosody" "$USERS"
	run_all prosody "$PROSODY_C2S_PORT" "$PROSODY_COMPONENT_PORT" "$PROSODY_PID"
	stop_started
fi

if wanted ejabberd; then
	if command -v erl >/dev/null && ejabberd_libs >/dev/null; then
		mkdir -p "$WORK/ejabberd"
		ejabberd_start "$WORK/ejabberd" "$USERS"
		run_all ejabberd "$EJABBERD_C2S_PORT" "$EJABBERD_COMPONENT_PORT" "$EJABBERD_PID"
		stop_started
	else
		log "ejabberd not installed (apt-get install ejabberd, or set EJABBERD_LIBS to the directory holding ejabberd-*/ebin); skipping the ejabberd column"
	fi
fi

if wanted herald; then
	if [[ -x $HERALD ]]; then
		mkdir -p "$WORK/herald"
		herald_start "$WORK/herald" "$USERS"
		run_all herald "$HERALD_C2S_PORT" "$HERALD_COMPONENT_PORT" "$HERALD_PID"
		stop_started
	else
		log "herald binary not found at $HERALD (build it: cargo build --release -p herald, or set HERALD=...); skipping the Herald column"
	fi
fi

echo
echo "== Prosody | ejabberd | Herald (TLS=$TLS, AUTH=$AUTH, MAM: Prosody ${PROSODY_MAM:-internal}, ejabberd mnesia, Herald SQLite$([[ ${PROSODY_MAM:-internal} == off ]] && echo ', all off'))"
cols=()
for server in prosody ejabberd herald; do
	files=()
	for s in login idle messages messages-rate push push-rate wake wake-100ms wake-fast wake-fast-100ms; do
		[[ -f $OUT/$server-$s.json ]] && files+=("$OUT/$server-$s.json")
	done
	case $server in prosody) side=--left ;; ejabberd) side=--middle ;; herald) side=--right ;; esac
	((${#files[@]})) && cols+=("$side" "${files[@]}")
done
if ((${#cols[@]})); then
	"$BENCH_BIN" compare --left-name prosody --middle-name ejabberd --right-name herald "${cols[@]}"
else
	log "no results to compare: see $OUT"
fi
if ((${#FAILED[@]})); then
	log "failed scenarios (their figures are missing or partial): ${FAILED[*]}"
	exit 1
fi
