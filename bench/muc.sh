#!/usr/bin/env bash
# Group chat side by side (issue 16): one room of N occupants on Prosody (mod_muc + mod_muc_mam),
# ejabberd (mod_muc, archive through mod_mam) and Herald, one sender at a fixed rate, the room
# archive on and then off (a fresh room each), with `herald-bench muc`: fan-out deliveries/s
# and delivery latency over every recipient, then every figure side by side.
#
# Usage: bench/muc.sh        (defaults: 1,000 occupants, 1 sender at 100 msgs/s for 10 s)
#   MUC_N / MUC_SENDERS / MUC_RATE / MUC_SECS   occupants, senders, msgs/s in all, seconds
#   ONLY, HERALD, BENCH_BIN, OUT, KEEP_DATA      as in bench/compare.sh
# Ports: the c2s/component ports of bench/compare.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

MUC_N=${MUC_N:-1000}
MUC_SENDERS=${MUC_SENDERS:-1}
MUC_RATE=${MUC_RATE:-100}
MUC_SECS=${MUC_SECS:-10}
ONLY=${ONLY:-}
TLS=none
export TLS

runner_setup muc

# run_all NAME C2S_PORT PID ARCHIVE_FIELD
run_all() {
	local name=$1 port=$2 pid=$3 field=$4 archive
	SERVER_PID=$pid
	for archive in on off; do
		log "[$name] muc: $MUC_N occupants, $MUC_SENDERS sender(s) at $MUC_RATE msgs/s for ${MUC_SECS}s, archive $archive"
		bench "$name" "muc-$archive" muc --port "$port" --domain localhost \
			--user-prefix "$BENCH_PREFIX" --password "$BENCH_PASSWORD" --server-pid "$pid" \
			-n "$MUC_N" -m "$MUC_SENDERS" -r "$MUC_RATE" -d "$MUC_SECS" --archive "$archive" \
			--archive-field "$field" --room "bench-$archive" --json "$OUT/$name-muc-$archive.json"
		rename "$OUT/$name-muc-$archive.json" muc "muc-archive-$archive"
	done
}

if wanted prosody; then
	mkdir -p "$WORK/prosody"
	prosody_start "$WORK/prosody" "$MUC_N"
	run_all prosody "$PROSODY_C2S_PORT" "$PROSODY_PID" muc#roomconfig_enablearchiving
	stop_started
fi

if wanted ejabberd; then
	if command -v erl >/dev/null && ejabberd_libs >/dev/null; then
		mkdir -p "$WORK/ejabberd"
		ejabberd_start "$WORK/ejabberd" "$MUC_N"
		run_all ejabberd "$EJABBERD_C2S_PORT" "$EJABBERD_PID" mam
		stop_started
	else
		log "ejabberd not installed; skipping the ejabberd column"
	fi
fi

if wanted herald; then
	if [[ -x $HERALD ]]; then
		mkdir -p "$WORK/herald"
		herald_start "$WORK/herald" "$MUC_N"
		run_all herald "$HERALD_C2S_PORT" "$HERALD_PID" muc#roomconfig_enablearchiving
		stop_started
	else
		log "herald binary not found at $HERALD; skipping the Herald column"
	fi
fi

echo
echo "== Prosody | ejabberd | Herald: one room, $MUC_N occupants, $MUC_SENDERS sender(s) at $MUC_RATE msgs/s"
cols=()
for server in prosody ejabberd herald; do
	files=()
	for s in muc-on muc-off; do
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
