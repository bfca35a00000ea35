#!/usr/bin/env bash
# Cluster mode's overhead: the same scenarios (logins, idle sessions, chat messages flat out and
# at a fixed rate) against three set-ups on one PostgreSQL, all on this machine:
#   single    one node without [cluster] (the baseline)
#   cluster1  one node with [cluster]: what Redis (registry writes, heartbeats) costs alone
#   cluster3  three nodes with [cluster]; herald-bench spreads sessions round-robin (--ports),
#             so each message pair's sender and receiver are on different nodes: every
#             message crosses nodes through Redis
# The three nodes share the machine's cores, so this measures the cluster's overhead, not its
# scaling. Beside herald-bench's figures (CPU of the nodes), it records the CPU of PostgreSQL
# and Redis during each scenario and Redis's memory per idle session (DIR/results/*.aux).
#
# Usage: bench/cluster.sh   (defaults finish in about three minutes)
#   LOGIN_N=2000 LOGIN_C=50 IDLE_N=3000 MSG_PAIRS=12 MSG_SECS=10 MSG_RATE=500
#   HERALD, BENCH_BIN   binaries (default target/release/…; build them with
#                       cargo build --release -p herald -p herald-bench)
#   ONLY=single,cluster1,cluster3   some set-ups only
#   OUT=dir             JSON results (default: a temp dir, printed at the end)
#   KEEP_DATA=1         keep the PostgreSQL data directory
# Ports: node i of a set-up listens on 25222 + 100*(i-1) (c2s), and 25223, 25347, 25269, 25443
# likewise. PostgreSQL and Redis are throwaway ones (.ci/pg, .ci/redis) on free ports.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

LOGIN_N=${LOGIN_N:-2000}
LOGIN_C=${LOGIN_C:-50}
IDLE_N=${IDLE_N:-3000}
MSG_PAIRS=${MSG_PAIRS:-12}
MSG_SECS=${MSG_SECS:-10}
MSG_RATE=${MSG_RATE:-500}
ONLY=${ONLY:-}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/herald-bench}
for b in "$HERALD" "$BENCH_BIN"; do
	[[ -x $b ]] || { log "no binary at $b: cargo build --release -p herald -p herald-bench (or set HERALD / BENCH_BIN)"; exit 1; }
done
HZ=$(getconf CLK_TCK)

# Users: idle 0.., then per set-up its own message pairs (two runs), so no set-up meets
# another's archive or offline messages. Logins reuse the idle users (they leave nothing).
SETUPS=(single cluster1 cluster3)
MSG_BASE=$IDLE_N
PER_SETUP=$((4 * MSG_PAIRS))
USERS=$((MSG_BASE + ${#SETUPS[@]} * PER_SETUP))
((USERS >= LOGIN_N)) || USERS=$LOGIN_N

WORK=$(mktemp -d /tmp/herald-cluster.XXXXXX)
# As root, .ci/pg runs PostgreSQL as the postgres user, who must reach WORK/pg.
chmod 755 "$WORK"
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
RUNDIR=""
cleanup() {
	[[ -z $RUNDIR ]] || "$ROOT/scripts/cluster.sh" stop "$RUNDIR" || true
	"$ROOT/.ci/redis" stop "$WORK/redis" || true
	"$ROOT/.ci/pg" stop "$WORK/pg" || true
	# The database holds every benchmark message.
	[[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$WORK/pg/data"
	log "results in $OUT; node logs in $WORK/*/n*.log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PG_URL=$("$ROOT/.ci/pg" start "$WORK/pg")
REDIS_URL=$("$ROOT/.ci/redis" start "$WORK/redis")
log "PostgreSQL $PG_URL, Redis $REDIS_URL (throwaway, in $WORK)"

# Every benchmark client connects from 127.0.0.1 and sends flat out: no per-address or rate
# limits (as bench/lib.sh's herald_start).
cat >"$WORK/extra.toml" <<'TOML'
[limits]
max_connections = 10000
max_connections_per_ip = 10000
max_unauthenticated_per_ip = 10000
c2s_stanzas_per_second = 0
c2s_bytes_per_second = 0
connection_rate_per_ip = 0
TOML

# pg_ticks: CPU ticks of PostgreSQL: the postmaster with the backends that exited (its
# children's time) and the live ones.
pg_ticks() {
	local pm t c
	pm=$(head -n 1 "$WORK/pg/data/postmaster.pid")
	t=$(awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$pm/stat")
	for c in $(pgrep -P "$pm"); do t=$((t + $(cpu_ticks "$c" || echo 0))); done
	echo "$t"
}
redis_ticks() { cpu_ticks "$(cat "$WORK/redis/redis.pid")"; }
redis_mem() { redis-cli -u "$REDIS_URL" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }'; }

# scenario SETUP NAME ARGS...: one herald-bench run against the set-up's nodes once they are
# idle, with the CPU seconds PostgreSQL and Redis used meanwhile in OUT/SETUP-NAME.aux.
FAILED=()
scenario() {
	local setup=$1 name=$2 pid pg0 rd0 mem0 rc=0
	shift 2
	for pid in ${PIDS//,/ }; do settle "$pid" >/dev/null; done
	pg0=$(pg_ticks) rd0=$(redis_ticks) mem0=$(redis_mem)
	# Redis's peak memory while the scenario runs: the registry holds sessions only while
	# they are connected, so the idle scenario's held sessions show there, not at its end.
	(
		peak=$mem0
		while sleep 0.5; do
			m=$(redis_mem) && ((m > peak)) && peak=$m && echo "$peak" >"$OUT/.peak"
		done
	) &
	local sampler=$!
	timeout 300 "$BENCH_BIN" "$@" --json "$OUT/$setup-$name.json" || rc=$?
	kill "$sampler" 2>/dev/null || true
	wait "$sampler" 2>/dev/null || true
	((rc == 0)) || { FAILED+=("$setup $name (exit $rc)"); log "[$setup] $name failed (exit $rc)"; }
	printf 'pg_cpu_s %s\nredis_cpu_s %s\nredis_peak_mem_growth_bytes %s\n' \
		"$(awk -v t=$(($(pg_ticks) - pg0)) -v hz="$HZ" 'BEGIN { print t / hz }')" \
		"$(awk -v t=$(($(redis_ticks) - rd0)) -v hz="$HZ" 'BEGIN { print t / hz }')" \
		"$(($(cat "$OUT/.peak" 2>/dev/null || echo "$mem0") - mem0))" >"$OUT/$setup-$name.aux"
	rm -f "$OUT/.peak"
}

run_setup() {
	local setup=$1 nodes=$2 standalone=$3 k=$4 i ports=()
	RUNDIR=$WORK/$setup
	redis-cli -u "$REDIS_URL" flushall >/dev/null
	NODES=$nodes STANDALONE=$standalone EXTRA_TOML=$WORK/extra.toml REQUIRE_ENCRYPTION=false \
		C2S_PORT=25222 COMPONENT_PORT=25347 S2S_PORT=25269 HTTP_PORT=25443 PORT_STEP=100 \
		HERALD_PG_URL=$PG_URL HERALD_REDIS_URL=$REDIS_URL HERALD=$HERALD \
		"$ROOT/scripts/cluster.sh" start "$RUNDIR"
	if [[ ! -f $WORK/users.done ]]; then
		log "creating $USERS accounts"
		"$HERALD" user add-bulk "$BENCH_PREFIX" "$USERS" "$BENCH_PASSWORD" --config "$RUNDIR/n1.toml"
		touch "$WORK/users.done"
	fi
	PIDS=$(cat "$RUNDIR"/n*.pid | paste -sd,)
	for i in $(seq "$nodes"); do ports+=($((25222 + 100 * (i - 1)))); done
	local ports_csv
	ports_csv=$(IFS=,; echo "${ports[*]}")
	local common=(--ports "$ports_csv" --domain localhost --user-prefix "$BENCH_PREFIX"
		--password "$BENCH_PASSWORD" --server-pid "$PIDS")
	local off=$((MSG_BASE + k * PER_SETUP))
	log "[$setup] login: $LOGIN_N logins, $LOGIN_C in flight, over ports $ports_csv"
	scenario "$setup" login login "${common[@]}" -n "$LOGIN_N" -c "$LOGIN_C"
	log "[$setup] idle: $IDLE_N sessions with stream management"
	scenario "$setup" idle idle "${common[@]}" -n "$IDLE_N" --sm --hold 2
	log "[$setup] messages: $MSG_PAIRS pairs flat out for ${MSG_SECS}s"
	scenario "$setup" messages messages "${common[@]}" --offset "$off" -p "$MSG_PAIRS" -d "$MSG_SECS"
	log "[$setup] messages: $MSG_PAIRS pairs at $MSG_RATE msgs/s for ${MSG_SECS}s"
	scenario "$setup" messages-rate messages "${common[@]}" --offset "$((off + 2 * MSG_PAIRS))" \
		-p "$MSG_PAIRS" -r "$MSG_RATE" -d "$MSG_SECS"
	[[ ! -f $OUT/$setup-messages-rate.json ]] ||
		sed -i 's/"scenario": "messages"/"scenario": "msg-rate"/' "$OUT/$setup-messages-rate.json"
	if [[ $standalone != 1 ]]; then "$HERALD" cluster status --config "$RUNDIR/n1.toml" || true; fi
	"$ROOT/scripts/cluster.sh" stop "$RUNDIR"
	RUNDIR=""
	# What a node logged at warning or above is worth a look: print it.
	grep -hiE 'WARN|ERROR' "$WORK/$setup"/n*.log | head -n 20 >&2 || true
}

k=0
for s in "${SETUPS[@]}"; do
	if [[ -z $ONLY || ,$ONLY, == *,$s,* ]]; then
		case $s in
		single) run_setup single 1 1 $k ;;
		cluster1) run_setup cluster1 1 0 $k ;;
		cluster3) run_setup cluster3 3 0 $k ;;
		esac
	fi
	k=$((k + 1))
done

echo
echo "== single node | one node with [cluster] | three nodes (herald-bench figures; server = the nodes)"
cols=()
for s in "${SETUPS[@]}"; do
	files=()
	for f in login idle messages messages-rate; do
		[[ -f $OUT/$s-$f.json ]] && files+=("$OUT/$s-$f.json")
	done
	case $s in single) side=--left ;; cluster1) side=--middle ;; cluster3) side=--right ;; esac
	((${#files[@]})) && cols+=("$side" "${files[@]}")
done
((${#cols[@]})) && "$BENCH_BIN" compare --left-name single --middle-name cluster1 --right-name cluster3 "${cols[@]}"
echo
echo "== CPU seconds of PostgreSQL and Redis during each scenario; how much Redis's memory grew at its peak"
for f in "$OUT"/*.aux; do
	[[ -f $f ]] || continue
	printf '%-24s %s\n' "$(basename "$f" .aux)" "$(awk '{ printf "%s %.2f  ", $1, $2 }' "$f")"
done
if ((${#FAILED[@]})); then
	log "failed scenarios: ${FAILED[*]}"
	exit 1
fi
