# Shared helpers for the bench scripts (sourced, not run). Every process started here is
# recorded in STARTED_PIDS so the caller's trap can stop exactly those.
# shellcheck shell=bash

STARTED_PIDS=()

# Accounts, secrets, ports and the Herald binary every side-by-side script uses (compare.sh,
# websocket.sh, muc.sh), each overridable from the environment. ROOT is the repository (the
# scripts that do not set it run from there).
BENCH_PREFIX=${BENCH_PREFIX:-bench}
BENCH_PASSWORD=${BENCH_PASSWORD:-bench-pass}
COMPONENT_SECRET=${COMPONENT_SECRET:-bench-secret}
PROSODY_C2S_PORT=${PROSODY_C2S_PORT:-15222}
PROSODY_COMPONENT_PORT=${PROSODY_COMPONENT_PORT:-15347}
PROSODY_HTTP_PORT=${PROSODY_HTTP_PORT:-15280}
HERALD_C2S_PORT=${HERALD_C2S_PORT:-25222}
HERALD_TLS_PORT=${HERALD_TLS_PORT:-25223}
HERALD_COMPONENT_PORT=${HERALD_COMPONENT_PORT:-25347}
EJABBERD_C2S_PORT=${EJABBERD_C2S_PORT:-35222}
EJABBERD_COMPONENT_PORT=${EJABBERD_COMPONENT_PORT:-35347}
EJABBERD_HTTP_PORT=${EJABBERD_HTTP_PORT:-35280}
HERALD=${HERALD:-${ROOT:-.}/target/release/herald}
export BENCH_PREFIX BENCH_PASSWORD COMPONENT_SECRET PROSODY_C2S_PORT PROSODY_COMPONENT_PORT \
	PROSODY_HTTP_PORT HERALD_C2S_PORT HERALD_TLS_PORT HERALD_COMPONENT_PORT HERALD \
	EJABBERD_C2S_PORT EJABBERD_COMPONENT_PORT EJABBERD_HTTP_PORT

log() { printf '[bench] %s\n' "$*" >&2; }

# wait_port PORT SECONDS: true once something accepts on 127.0.0.1:PORT.
wait_port() {
	local port=$1 deadline=$((SECONDS + $2))
	while ((SECONDS < deadline)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
		sleep 0.2
	done
	return 1
}

# port_free PORT: true if nothing listens there.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# cpu_ticks PID: user+system CPU of a process in clock ticks (fields 14 and 15 of its stat).
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null; }

# settle PID [MAX]: waits until the process used less than 5 % of a core over one second (the
# previous scenario's backlog is done), at most MAX seconds (default 60); prints the seconds it
# waited. An overloaded server can still be delivering a scenario's messages long after the
# client gave up on them, and would charge that work to the next scenario.
settle() {
	local pid=$1 max=${2:-60} start=$SECONDS prev now
	prev=$(cpu_ticks "$pid") || { echo 0; return; }
	while ((SECONDS - start < max)); do
		sleep 1
		now=$(cpu_ticks "$pid") || break
		((now - prev < 5)) && break
		prev=$now
	done
	echo $((SECONDS - start))
}

stop_started() {
	local pid
	for pid in "${STARTED_PIDS[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	STARTED_PIDS=()
}

# gen_cert DIR: self-signed localhost certificate for STARTTLS runs.
gen_cert() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
		-keyout "$1/localhost.key" -out "$1/localhost.crt" >/dev/null 2>&1
}

# prosody_start DIR USERS: config from the template, accounts written directly, Prosody in
# the foreground as a child; sets PROSODY_PID. Env: PROSODY_C2S_PORT, PROSODY_COMPONENT_PORT,
# PROSODY_MAM (sql|internal|off), COMPONENT_SECRET, BENCH_PASSWORD, BENCH_PREFIX.
prosody_start() {
	local dir=$1 users=$2 here
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	command -v prosody >/dev/null || { log "prosody not installed (apt-get install prosody prosody-modules lua-dbi-sqlite3)"; return 1; }
	mkdir -p "$dir/data"
	gen_cert "$dir"
	local mam_module='"mam";' store=sql
	case ${PROSODY_MAM:-internal} in
		sql) ;;
		internal) store=internal ;;
		off) mam_module='' store=internal ;;
		*) log "PROSODY_MAM must be sql, internal or off"; return 1 ;;
	esac
	sed -e "s|@DIR@|$dir|g" -e "s|@PLUGINS@|/usr/lib/prosody/modules|g" \
		-e "s|@LOGLEVEL@|${PROSODY_LOGLEVEL:-warn}|g" \
		-e "s|@C2S_PORT@|$PROSODY_C2S_PORT|g" -e "s|@COMPONENT_PORT@|$PROSODY_COMPONENT_PORT|g" \
		-e "s|@COMPONENT_SECRET@|$COMPONENT_SECRET|g" -e "s|@ARCHIVE_STORE@|$store|g" \
		-e "s|@MAM_MODULE@|$mam_module|g" -e "s|@HTTP_PORT@|$PROSODY_HTTP_PORT|g" \
		"$here/prosody.cfg.lua.in" >"$dir/prosody.cfg.lua"
	"$BENCH_BIN" prosody-users --data-dir "$dir/data" --domain localhost \
		--prefix "$BENCH_PREFIX" --count "$users" --password "$BENCH_PASSWORD"
	port_free "$PROSODY_C2S_PORT" || { log "port $PROSODY_C2S_PORT is busy"; return 1; }
	prosody -F --config "$dir/prosody.cfg.lua" >"$dir/prosody.out" 2>&1 &
	PROSODY_PID=$!
	STARTED_PIDS+=("$PROSODY_PID")
	if ! wait_port "$PROSODY_C2S_PORT" 20 || ! wait_port "$PROSODY_COMPONENT_PORT" 5; then
		log "prosody did not start; see $dir/prosody.out and $dir/prosody.log"
		tail -n 20 "$dir/prosody.out" "$dir/prosody.log" >&2 2>/dev/null || true
		return 1
	fi
	log "prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null) pid $PROSODY_PID on c2s $PROSODY_C2S_PORT, component $PROSODY_COMPONENT_PORT (MAM ${PROSODY_MAM:-internal})"
}

# herald_start DIR USERS: TOML config, bulk users, `herald serve`; sets HERALD_PID.
# Env: HERALD (binary), HERALD_C2S_PORT, HERALD_TLS_PORT, HERALD_COMPONENT_PORT.
herald_start() {
	local dir=$1 users=$2
	mkdir -p "$dir/data"
	cat >"$dir/herald.toml" <<TOML
domain = "localhost"
data_dir = "$dir/data"

[c2s]
listen = "127.0.0.1:$HERALD_C2S_PORT"
direct_tls_listen = "127.0.0.1:$HERALD_TLS_PORT"
require_encryption = false

[components]
listen = "127.0.0.1:$HERALD_COMPONENT_PORT"

# No HTTPS listener (5443 may be ejabberd's, which runs beside it); with HERALD_HTTP_PORT set
# (bench/websocket.sh), a plain loopback listener for RFC 7395 WebSocket.
[http]
listen = ""
plain_listen = "${HERALD_HTTP_PORT:+127.0.0.1:$HERALD_HTTP_PORT}"

[[components.component]]
domain = "push.localhost"
secret = "$COMPONENT_SECRET"

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
	# Same archiving as Prosody: MAM off there means no archive here either.
	if [[ ${PROSODY_MAM:-internal} == off ]]; then
		printf '\n[mam]\ndefault = "never"\n' >>"$dir/herald.toml"
	fi
	"$HERALD" user add-bulk "$BENCH_PREFIX" "$users" "$BENCH_PASSWORD" --config "$dir/herald.toml" || return 1
	port_free "$HERALD_C2S_PORT" || { log "port $HERALD_C2S_PORT is busy"; return 1; }
	"$HERALD" serve --config "$dir/herald.toml" >"$dir/herald.out" 2>&1 &
	HERALD_PID=$!
	STARTED_PIDS+=("$HERALD_PID")
	if ! wait_port "$HERALD_C2S_PORT" 20 || ! wait_port "$HERALD_COMPONENT_PORT" 5; then
		log "herald did not start; see $dir/herald.out"
		tail -n 20 "$dir/herald.out" >&2 || true
		return 1
	fi
	log "herald pid $HERALD_PID on c2s $HERALD_C2S_PORT, component $HERALD_COMPONENT_PORT"
}

# ejabberd_libs: the directory holding ejabberd's ebin/ (what ejabberdctl puts in ERL_LIBS),
# from EJABBERD_LIBS or the Debian package's layout; fails if ejabberd is not installed.
ejabberd_libs() {
	local app globs=(/usr/lib/*/ejabberd-*/ebin/ejabberd.app /usr/lib/ejabberd*/ebin/ejabberd.app)
	[[ -z ${EJABBERD_LIBS:-} ]] || globs=("$EJABBERD_LIBS"/ejabberd*/ebin/ejabberd.app)
	for app in "${globs[@]}"; do
		[[ -f $app ]] && { dirname "$(dirname "$(dirname "$app")")"; return; }
	done
	return 1
}

# ejabberd_cmd DIR: sets EJABBERD_CMD to run ejabberd in the VM the way `ejabberdctl foreground`
# does (same emulator flags and environment; config, log and mnesia spool under DIR), but as the
# current user and without distribution: no node name, so no epmd daemon is left behind and no
# cookie is written. env, erl and erlexec exec each other, so a caller's pid is beam.smp's.
ejabberd_cmd() {
	local dir=$1
	EJABBERD_CMD=(env "ERL_LIBS=$EJABBERD_ERL_LIBS" "EJABBERD_CONFIG_PATH=$dir/ejabberd.yml"
		"EJABBERD_LOG_PATH=$dir/ejabberd.log" "ERL_CRASH_DUMP=$dir/erl_crash.dump"
		ERL_MAX_PORTS=32000 ERL_MAX_ETS_TABLES=1400
		erl +K true +P 250000 -noinput -mnesia dir "\"$dir/spool\"" -s ejabberd)
}

# ejabberd_start DIR USERS: config from the template; accounts written by a first, short run of
# ejabberd on the same spool (bench/ejabberd-users.erl, then it stops); then ejabberd in the
# foreground as a child; sets EJABBERD_PID (beam.smp). Env: EJABBERD_C2S_PORT,
# EJABBERD_COMPONENT_PORT, TLS, PROSODY_MAM (off: no mod_mam), COMPONENT_SECRET, BENCH_*.
ejabberd_start() {
	local dir=$1 users=$2 here mam mam_note=always starttls=false
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	if ! command -v erl >/dev/null || ! EJABBERD_ERL_LIBS=$(ejabberd_libs); then
		log "ejabberd not installed (apt-get install ejabberd)"
		return 1
	fi
	mkdir -p "$dir/spool"
	gen_cert "$dir"
	[[ ${TLS:-none} == starttls ]] && starttls=true
	# Same archiving as Prosody and Herald: MAM off there means no mod_mam here.
	mam='  mod_mam:\n    default: always'
	[[ ${PROSODY_MAM:-internal} == off ]] && mam='' mam_note=off
	sed -e "s|@DIR@|$dir|g" -e "s|@LOGLEVEL@|${EJABBERD_LOGLEVEL:-warning}|g" \
		-e "s|@C2S_PORT@|$EJABBERD_C2S_PORT|g" -e "s|@COMPONENT_PORT@|$EJABBERD_COMPONENT_PORT|g" \
		-e "s|@COMPONENT_SECRET@|$COMPONENT_SECRET|g" -e "s|@STARTTLS@|$starttls|g" \
		-e "s|@MAM_MODULE@|$mam|g" -e "s|@HTTP_PORT@|$EJABBERD_HTTP_PORT|g" \
		"$here/ejabberd.yml.in" >"$dir/ejabberd.yml"
	port_free "$EJABBERD_C2S_PORT" || { log "port $EJABBERD_C2S_PORT is busy"; return 1; }
	port_free "$EJABBERD_COMPONENT_PORT" || { log "port $EJABBERD_COMPONENT_PORT is busy"; return 1; }
	ejabberd_cmd "$dir"
	local t0=$SECONDS script="$here/ejabberd-users.erl"
	log "ejabberd: writing $users accounts (a first run of ejabberd on the new spool)"
	(cd "$dir" && export BENCH_USERS=$users && exec timeout 180 "${EJABBERD_CMD[@]}" -eval "
		try file:script(\"$script\") of
			{ok, N} -> io:format(\"~p accounts~n\", [N]), init:stop();
			Other -> io:format(\"accounts failed: ~p~n\", [Other]), halt(1)
		catch C:E -> io:format(\"accounts failed: ~p:~p~n\", [C, E]), halt(1) end.") \
		>"$dir/users.out" 2>&1 || {
		log "ejabberd accounts failed; see $dir/users.out and $dir/ejabberd.log"
		tail -n 20 "$dir/users.out" "$dir/ejabberd.log" >&2 2>/dev/null || true
		return 1
	}
	log "ejabberd: $(grep -h 'accounts$' "$dir/users.out") written in $((SECONDS - t0)) s"
	(cd "$dir" && exec "${EJABBERD_CMD[@]}") >"$dir/ejabberd.out" 2>&1 &
	EJABBERD_PID=$!
	STARTED_PIDS+=("$EJABBERD_PID")
	if ! wait_port "$EJABBERD_C2S_PORT" 60 || ! wait_port "$EJABBERD_COMPONENT_PORT" 5; then
		log "ejabberd did not start; see $dir/ejabberd.out and $dir/ejabberd.log"
		tail -n 20 "$dir/ejabberd.out" "$dir/ejabberd.log" >&2 2>/dev/null || true
		return 1
	fi
	# The RSS and CPU figures must be the VM's, not a wrapper's.
	[[ $(cat "/proc/$EJABBERD_PID/comm") == beam.smp ]] ||
		{ log "pid $EJABBERD_PID is $(cat "/proc/$EJABBERD_PID/comm"), not beam.smp"; return 1; }
	log "ejabberd $(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null) pid $EJABBERD_PID (beam.smp) on c2s $EJABBERD_C2S_PORT, component $EJABBERD_COMPONENT_PORT (MAM in mnesia: $mam_note)"
}

# runner_setup NAME: what a side-by-side script (compare.sh, websocket.sh) shares: a work dir
# /tmp/herald-NAME.* with OUT for JSON results, cleanup of every started server on exit, the
# release herald-bench (BENCH_BIN), and the helpers below. Call it at the top level (the traps
# and globals it sets are the script's).
runner_setup() {
	WORK=$(mktemp -d "/tmp/herald-$1.XXXXXX")
	OUT=${OUT:-$WORK/results}
	mkdir -p "$OUT"
	cleanup() {
		stop_started
		# The stores hold every benchmark message; repeated runs filled the disk when they stayed.
		[[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$WORK"/herald/data "$WORK"/prosody/data "$WORK"/ejabberd/spool
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

	# wanted NAME: true if ONLY is empty or names NAME (ONLY may be a comma list).
	wanted() { [[ -z $ONLY || ,$ONLY, == *,$1,* ]]; }

	# bench NAME LABEL ARGS...: one herald-bench scenario against server NAME (pid SERVER_PID), once
	# the server is idle again (settle). A failed scenario is logged and listed at the end; the
	# others (and the other servers) still run.
	FAILED=()
	bench() {
		local name=$1 label=$2 rc=0 waited
		shift 2
		waited=$(settle "$SERVER_PID")
		((waited <= 1)) || log "[$name] before $label: the server was busy for another $waited s"
		timeout 300 "$BENCH_BIN" "$@" || rc=$?
		if ((rc)); then
			FAILED+=("$name $label (exit $rc)")
			log "[$name] $label failed (exit $rc)"
		fi
	}

	# rename FILE FROM TO: a second scenario name so compare lines up two runs of one scenario.
	rename() { [[ ! -f $1 ]] || sed -i "s/\"scenario\": \"$2\"/\"scenario\": \"$3\"/" "$1"; }
}
