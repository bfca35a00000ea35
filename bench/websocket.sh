#!/usr/bin/env bash
# XMPP over WebSocket (RFC 7395) next to TCP, for Prosody (mod_websocket), ejabberd
# (ejabberd_http_ws) and Herald (`/xmpp-websocket` on its plain HTTP listener): the same
# herald-bench scenarios, once over the c2s port and once over ws://127.0.0.1:PORT/xmpp-websocket,
# then every figure side by side. The bench's WebSocket client bridges its byte stream to
# WebSocket messages in a task of its own (crates/herald-bench/src/ws.rs), which is in the
# WebSocket figures for every server alike.
#
# Usage: bench/websocket.sh        (about two minutes per server with the defaults)
#   LOGIN_N / LOGIN_C   logins per run and logins in flight (default 1000 / 50)
#   MSG_PAIRS / MSG_RATE / MSG_SECS   the latency run: pairs, msgs/s in all, seconds (20 / 1000 / 10)
#   ONLY, HERALD, BENCH_BIN, OUT, KEEP_DATA   as in bench/compare.sh
# Ports: the c2s/component ports of bench/compare.sh, and HTTP on PROSODY_HTTP_PORT (15280),
# EJABBERD_HTTP_PORT (35280), HERALD_HTTP_PORT (25280).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

LOGIN_N=${LOGIN_N:-1000}
LOGIN_C=${LOGIN_C:-50}
MSG_PAIRS=${MSG_PAIRS:-20}
MSG_RATE=${MSG_RATE:-1000}
MSG_SECS=${MSG_SECS:-10}
ONLY=${ONLY:-}
TLS=none
# Herald's plain HTTP listener only for this script (herald_start adds it when this is set).
HERALD_HTTP_PORT=${HERALD_HTTP_PORT:-25280}
export TLS HERALD_HTTP_PORT

# Disjoint users per run: messages over TCP, then over WebSocket (logins reuse users; they
# leave nothing behind).
MSG_OFF=0
MSG_OFF2=$((2 * MSG_PAIRS))
USERS=$((4 * MSG_PAIRS))
((USERS >= LOGIN_N)) || USERS=$LOGIN_N

runner_setup websocket

# run_all NAME C2S_PORT HTTP_PORT PID
run_all() {
	local name=$1 port=$2 hport=$3 pid=$4
	SERVER_PID=$pid
	wait_port "$hport" 20 || { FAILED+=("$name: no HTTP listener on $hport"); return; }
	local common=(--port "$port" --domain localhost --user-prefix "$BENCH_PREFIX"
		--password "$BENCH_PASSWORD" --tls none --auth scram-sha1 --server-pid "$pid")
	local ws=(--websocket "ws://127.0.0.1:$hport/xmpp-websocket")
	log "[$name] login over TCP, then WebSocket: $LOGIN_N logins, $LOGIN_C in flight"
	bench "$name" login login "${common[@]}" -n "$LOGIN_N" -c "$LOGIN_C" \
		--json "$OUT/$name-login.json"
	bench "$name" login-ws login "${common[@]}" "${ws[@]}" -n "$LOGIN_N" -c "$LOGIN_C" \
		--json "$OUT/$name-login-ws.json"
	rename "$OUT/$name-login-ws.json" login login-ws
	log "[$name] messages over TCP, then WebSocket: $MSG_PAIRS pairs at $MSG_RATE msgs/s for ${MSG_SECS}s"
	bench "$name" messages messages "${common[@]}" --offset "$MSG_OFF" -p "$MSG_PAIRS" \
		-r "$MSG_RATE" -d "$MSG_SECS" --json "$OUT/$name-messages.json"
	bench "$name" messages-ws messages "${common[@]}" "${ws[@]}" --offset "$MSG_OFF2" \
		-p "$MSG_PAIRS" -r "$MSG_RATE" -d "$MSG_SECS" --json "$OUT/$name-messages-ws.json"
	rename "$OUT/$name-messages-ws.json" messages messages-ws
}

if wanted prosody; then
	mkdir -p "$WORK/prosody"
	prosody_start "$WORK/prosody" "$USERS"
	run_all prosody "$PROSODY_C2S_PORT" "$PROSODY_HTTP_PORT" "$PROSODY_PID"
	stop_started
fi

if wanted ejabberd; then
	if command -v erl >/dev/null && ejabberd_libs >/dev/null; then
		mkdir -p "$WORK/ejabberd"
		ejabberd_start "$WORK/ejabberd" "$USERS"
		run_all ejabberd "$EJABBERD_C2S_PORT" "$EJABBERD_HTTP_PORT" "$EJABBERD_PID"
		stop_started
	else
		log "ejabberd not installed; skipping the ejabberd column"
	fi
fi

if wanted herald; then
	if [[ -x $HERALD ]]; then
		mkdir -p "$WORK/herald"
		herald_start "$WORK/herald" "$USERS"
		run_all herald "$HERALD_C2S_PORT" "$HERALD_HTTP_PORT" "$HERALD_PID"
		stop_started
	else
		log "herald binary not found at $HERALD; skipping the Herald column"
	fi
fi

echo
echo "== Prosody | ejabberd | Herald: TCP and RFC 7395 WebSocket (no TLS, SCRAM-SHA-1)"
cols=()
for server in prosody ejabberd herald; do
	files=()
	for s in login login-ws messages messages-ws; do
		[[ -f $OUT/$server-$s.json ]] && files+=("$OUT/$server-$s.json")
	done
	case $server in prosody) side=--left ;; ejabberd) side=--middle ;; herald) side=--right ;; esac
	((${#files[@]})) && cols+=("$side" "${files[@]}")
done
((${#cols[@]})) && "$BENCH_BIN" compare "${cols[@]}"
if ((${#FAILED[@]})); then
	log "failed: ${FAILED[*]}"
	exit 1
fi
