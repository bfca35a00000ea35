#!/usr/bin/env bash
# A Herald cluster on one machine with one command: NODES (default 3) `herald serve` processes
# sharing one PostgreSQL and one Redis, for trying cluster mode out (see README, "Cluster mode").
#
#   scripts/cluster.sh start [DIR]   write DIR/n1.toml … and start the nodes (logs DIR/nN.log)
#   scripts/cluster.sh status [DIR]  herald cluster status
#   scripts/cluster.sh stop [DIR]    stop the nodes, then the PostgreSQL and Redis it started
#                                    (their data goes with them: the next start is empty)
#
# DIR defaults to ./herald-cluster. PostgreSQL and Redis: $HERALD_PG_URL and $HERALD_REDIS_URL
# if set (left running at stop), else throwaway ones under DIR/pg and DIR/redis (.ci/pg,
# .ci/redis). Nothing is built: the binary is $HERALD (default target/release/herald).
# Node i (from 1) listens on the base ports + (i-1)*PORT_STEP, all on 127.0.0.1:
#   C2S_PORT=5222 (direct TLS: +1)  COMPONENT_PORT=5347  S2S_PORT=5269  HTTP_PORT=5443
#   PORT_STEP=1000                  so n2 has 6222/6223/6347/6269/6443, n3 7222/…
# Other knobs: NODES=3, LEASE=15s, REQUIRE_ENCRYPTION=true (false: plaintext c2s allowed, for
# benchmarks), EXTRA_TOML=FILE (appended to every node's config; it must not repeat a table
# written here: [store] [c2s] [components] [s2s] [http] [cluster]), STANDALONE=1 (no [cluster]
# table: plain single nodes on the shared PostgreSQL, the benchmark's baseline).
set -euo pipefail

cmd=${1:-}
DIR=${2:-./herald-cluster}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERALD=${HERALD:-$ROOT/target/release/herald}
NODES=${NODES:-3}
C2S_PORT=${C2S_PORT:-5222}
COMPONENT_PORT=${COMPONENT_PORT:-5347}
S2S_PORT=${S2S_PORT:-5269}
HTTP_PORT=${HTTP_PORT:-5443}
PORT_STEP=${PORT_STEP:-1000}
LEASE=${LEASE:-15s}
REQUIRE_ENCRYPTION=${REQUIRE_ENCRYPTION:-true}

log() { printf '[cluster] %s\n' "$*" >&2; }

# wait_port PORT SECONDS: true once something accepts on 127.0.0.1:PORT.
wait_port() {
	local deadline=$((SECONDS + $2))
	while ((SECONDS < deadline)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.2
	done
	return 1
}

# The first node's config, the one the CLI commands (user add, cluster status) are given.
first_config() { echo "$DIR/n1.toml"; }

write_config() {
	local i=$1 off=$((($1 - 1) * PORT_STEP))
	local toml=$DIR/n$i.toml
	cat >"$toml" <<TOML
# Node n$i of the cluster made by scripts/cluster.sh; every node has the same domain, store
# and Redis, and its own ports and data_dir (certificate, admin socket, uploads).
domain = "localhost"
data_dir = "$DIR/n$i"

[store]
backend = "postgres"
url = "$PG_URL"

[c2s]
listen = "127.0.0.1:$((C2S_PORT + off))"
direct_tls_listen = "127.0.0.1:$((C2S_PORT + 1 + off))"
require_encryption = $REQUIRE_ENCRYPTION

[components]
listen = "127.0.0.1:$((COMPONENT_PORT + off))"

[s2s]
listen = "127.0.0.1:$((S2S_PORT + off))"

[http]
listen = "127.0.0.1:$((HTTP_PORT + off))"
TOML
	if [[ ${STANDALONE:-0} != 1 ]]; then
		printf '\n[cluster]\nredis = "%s"\nnode = "n%s"\nlease = "%s"\n' "$REDIS_URL" "$i" "$LEASE" >>"$toml"
	fi
	if [[ -n ${EXTRA_TOML:-} ]]; then
		printf '\n' >>"$toml"
		cat "$EXTRA_TOML" >>"$toml"
	fi
}

# stop_nodes: SIGTERM to every node this DIR started, then wait for each (a node saves its
# resumable sessions on the way out, which takes up to shutdown_timeout).
stop_nodes() {
	local f pid
	for f in "$DIR"/n*.pid; do
		[[ -f $f ]] || continue
		pid=$(cat "$f")
		kill -TERM "$pid" 2>/dev/null || true
	done
	for f in "$DIR"/n*.pid; do
		[[ -f $f ]] || continue
		pid=$(cat "$f")
		for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			log "$(basename "$f" .pid) (pid $pid) still running after 15 s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$f"
	done
}

# stop_services: the throwaway PostgreSQL and Redis, only if this DIR started them, and their
# data: they are throwaway, and .ci/pg initialises an empty directory only, so the next start
# begins with an empty database (accounts included).
stop_services() {
	if [[ -f $DIR/redis/started ]]; then "$ROOT/.ci/redis" stop "$DIR/redis"; rm -rf "$DIR/redis"; fi
	if [[ -f $DIR/pg.started ]]; then "$ROOT/.ci/pg" stop "$DIR/pg"; rm -rf "$DIR/pg" "$DIR/pg.started"; fi
}

start() {
	[[ -x $HERALD ]] || { log "no herald binary at $HERALD: build it with cargo build --release -p herald (or set HERALD=…)"; exit 1; }
	if compgen -G "$DIR/n*.pid" >/dev/null; then
		log "$DIR already has running nodes: scripts/cluster.sh stop $DIR first"
		exit 1
	fi
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd)
	# A failed start stops what it started; a successful one leaves the cluster running.
	trap 'log "start failed: stopping what was started"; stop_nodes; stop_services' EXIT
	for i in $(seq "$NODES"); do
		local off=$(((i - 1) * PORT_STEP)) p
		for p in $((C2S_PORT + off)) $((C2S_PORT + 1 + off)) $((COMPONENT_PORT + off)) $((S2S_PORT + off)) $((HTTP_PORT + off)); do
			if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then log "port $p (node n$i) is busy: set C2S_PORT=… or PORT_STEP=…"; exit 1; fi
		done
	done
	PG_URL=${HERALD_PG_URL:-}
	if [[ -z $PG_URL && -e $DIR/pg ]]; then
		log "$DIR/pg is left from an earlier run (stop removes it): remove it, or set HERALD_PG_URL"
		exit 1
	fi
	if [[ -z $PG_URL ]]; then
		# The pg directory belongs to the postgres user when run as root (.ci/pg), so the
		# marker that says "this DIR started it" lives beside it.
		PG_URL=$("$ROOT/.ci/pg" start "$DIR/pg")
		touch "$DIR/pg.started"
		log "PostgreSQL $PG_URL (throwaway, in $DIR/pg)"
	fi
	REDIS_URL=${HERALD_REDIS_URL:-}
	if [[ -z $REDIS_URL && ${STANDALONE:-0} != 1 ]]; then
		REDIS_URL=$("$ROOT/.ci/redis" start "$DIR/redis")
		touch "$DIR/redis/started"
		log "Redis $REDIS_URL (throwaway, in $DIR/redis)"
	fi
	for i in $(seq "$NODES"); do
		write_config "$i"
		"$HERALD" check-config --config "$DIR/n$i.toml" >/dev/null
	done
	for i in $(seq "$NODES"); do
		mkdir -p "$DIR/n$i"
		# n1 makes the secrets a node keeps in data_dir, the others get a copy before they
		# start: one certificate (a client may pin it, whatever node it reaches), and one FAST
		# token key and upload URL key, or a token or upload URL from one node would not be
		# valid on another.
		if ((i > 1)); then
			for f in cert.pem key.pem fast.key upload.key; do
				[[ ! -f $DIR/n1/$f ]] || cp -p "$DIR/n1/$f" "$DIR/n$i/"
			done
		fi
		"$HERALD" serve --config "$DIR/n$i.toml" >"$DIR/n$i.log" 2>&1 &
		echo $! >"$DIR/n$i.pid"
		local port=$((C2S_PORT + (i - 1) * PORT_STEP))
		if ! wait_port "$port" 30; then
			log "n$i did not start accepting on $port; the end of $DIR/n$i.log:"
			tail -n 20 "$DIR/n$i.log" >&2
			exit 1
		fi
		log "n$i pid $(cat "$DIR/n$i.pid"), c2s 127.0.0.1:$port, log $DIR/n$i.log"
	done
	trap - EXIT
	if [[ ${STANDALONE:-0} != 1 ]]; then
		# Each node announces itself with its first heartbeat, a moment after it listens.
		sleep 1
		"$HERALD" cluster status --config "$(first_config)"
	fi
	log "add users with: $HERALD user add alice@localhost --password pw --config $(first_config)"
	log "stop with: $0 stop $DIR"
}

case $cmd in
start) start ;;
status) "$HERALD" cluster status --config "$(first_config)" ;;
stop)
	stop_nodes
	stop_services
	;;
*)
	sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
