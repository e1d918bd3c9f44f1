#!/usr/bin/env bash
# Starts service A and service B on this machine as two separate processes, waits until
# both accept connections, prints their URLs, and stops both on Ctrl-C. No Docker needed.
#
# Each service runs on its own: stop A (the printed `kill` command) and B keeps serving,
# answering 503 "provider unavailable"; start A again (the printed command) and B recovers.
#
# --a-replicas N (1 to 9; default 1) starts N processes of A, each on its own port with its
# own fault endpoint, and gives B all of them (--provider-url, comma-separated): B chooses
# a replica for every attempt, and a retry goes to another. Replica 1 is A as above
# (127.0.0.1:8080, faults on 127.0.0.1:9180); replica k (2 to 9) listens on 127.0.0.1:808k
# with its fault endpoint on 127.0.0.1:918k, so a port's last digit names its replica. The
# banner lists each replica with its pid and the command that starts it again.
#
# It refuses to start when something already serves either address (an A started by hand
# earlier, say), and when either service exits during start-up. The PIDs it prints are its
# own children; Ctrl-C or SIGTERM stops exactly those, and it exits 0.
#
# Settings come from the services' own flags' environment variables, e.g.
#   PROVIDER_TIMEOUT_MS=500 ./deploy/run-local.sh
# Set BIN_DIR to run binaries already built there instead of building the release ones
# (BIN_DIR=./target/release after a first build; the tests do).
#
# Both services also get their fault endpoint, on loopback only, for the labs (`lab list`):
# A on 127.0.0.1:9180, B on 127.0.0.1:9181. While it runs, it writes where everything
# listens in services.env in lab's state directory ($LAB_STATE_DIR, else
# $XDG_STATE_HOME/first-distributed-system, else ~/.local/state/first-distributed-system),
# so `lab` finds the services wherever they are; the banner prints the same as
# `export LAB_...` lines.
#
# PORT_BASE moves every port at once (on a machine others use too): PORT_BASE=23000 puts A
# on 23000, B on 23001, Prometheus on 23002, Alertmanager on 23003, the span collector on
# 23004, A's fault endpoint on 23005 and B's on 23006, replica k of A (--a-replicas) on
# 23010+k and its fault endpoint on 23020+k. One address at a time: A_ADDR, B_ADDR,
# A_FAULT_LISTEN_ADDR, B_FAULT_LISTEN_ADDR, PROMETHEUS_ADDR, ALERTMANAGER_ADDR, OTLP_ADDR
# (these win over PORT_BASE; A_ADDR and A_FAULT_LISTEN_ADDR are replica 1's).
#
# With --observe it also starts, on loopback and with no Docker, what the labs read:
#   - a Prometheus on PROMETHEUS_ADDR (127.0.0.1:9090) with deploy/prometheus/prometheus-local.yml
#     (both services as jobs service-a and service-b, one target per replica of A; the
#     project's alert and recording rules), when `prometheus` is installed (it says how to
#     install it when it is not);
#   - an Alertmanager on ALERTMANAGER_ADDR (127.0.0.1:9093) with deploy/alertmanager/, when
#     `alertmanager` (Debian: prometheus-alertmanager) is installed;
#   - the labs' span collector (`lab collect`) on OTLP_ADDR (127.0.0.1:4318), which both
#     services export their spans to, for `lab trace` (unless OTEL_EXPORTER_OTLP_ENDPOINT
#     already points them elsewhere, e.g. at a Jaeger).
# Their data lives in a temporary directory removed on exit; Ctrl-C stops them too.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "run-local: $*" >&2; }

observe='' a_replicas=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --observe) observe=yes ;;
        --a-replicas=*) a_replicas=${1#*=} ;;
        --a-replicas) a_replicas=${2:-}; [[ $# -gt 1 ]] && shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 0 ;;
        *) say "unknown argument $1 (try --help)"; exit 2 ;;
    esac
    shift
done
if ! [[ $a_replicas =~ ^[1-9]$ ]]; then
    say "--a-replicas ${a_replicas:-(nothing)}: give a number of replicas of A from 1 to 9"
    exit 2
fi

# Every port: its default, or PORT_BASE plus its place in this list. Replica k of A (2 to
# 9) takes PORT_BASE+10+k and, for its fault endpoint, PORT_BASE+20+k.
port_base=${PORT_BASE:-}
if [[ -n $port_base ]] && ! [[ $port_base =~ ^[0-9]+$ && $port_base -ge 1024 && $port_base -le 65500 ]]; then
    say "PORT_BASE=$port_base: give a port from 1024 to 65500 (the services take it and the ports after it)"
    exit 2
fi
port() { if [[ -n $port_base ]]; then echo $((port_base + $1)); else echo "$2"; fi; }
A_ADDR=${A_ADDR:-127.0.0.1:$(port 0 8080)}
B_ADDR=${B_ADDR:-127.0.0.1:$(port 1 8081)}
PROMETHEUS_ADDR=${PROMETHEUS_ADDR:-127.0.0.1:$(port 2 9090)}
ALERTMANAGER_ADDR=${ALERTMANAGER_ADDR:-127.0.0.1:$(port 3 9093)}
OTLP_ADDR=${OTLP_ADDR:-127.0.0.1:$(port 4 4318)}
A_FAULT_LISTEN_ADDR=${A_FAULT_LISTEN_ADDR:-127.0.0.1:$(port 5 9180)}
export B_FAULT_LISTEN_ADDR=${B_FAULT_LISTEN_ADDR:-127.0.0.1:$(port 6 9181)}

# A's replicas: replica 1 is A as above; replica k listens on 808k (PORT_BASE+10+k) and
# has its fault endpoint on 918k (PORT_BASE+20+k).
a_addrs=("$A_ADDR") a_fault_addrs=("$A_FAULT_LISTEN_ADDR")
for ((k = 2; k <= a_replicas; k++)); do
    a_addrs+=("127.0.0.1:$(port $((10 + k)) $((8080 + k)))")
    a_fault_addrs+=("127.0.0.1:$(port $((20 + k)) $((9180 + k)))")
done

# What --observe starts: each tool only when it is installed, the span collector only when
# the spans are not already going elsewhere.
prometheus_bin='' alertmanager_bin='' collect=''
if [[ -n $observe ]]; then
    if command -v prometheus >/dev/null 2>&1; then
        prometheus_bin=prometheus
    else
        say "prometheus is not installed: no local Prometheus, so \`lab check\` shows no values."
        say "  Install it (Debian/Ubuntu: sudo apt-get install prometheus; macOS: brew install prometheus;"
        say "  anywhere: the prometheus binary from https://prometheus.io/download/ on your PATH), then start again."
    fi
    for candidate in alertmanager prometheus-alertmanager; do
        if command -v "$candidate" >/dev/null 2>&1; then alertmanager_bin=$candidate; break; fi
    done
    if [[ -n $prometheus_bin && -z $alertmanager_bin ]]; then
        say "alertmanager is not installed: Prometheus shows the alerts at /alerts, nothing routes them."
        say "  Install it (Debian/Ubuntu: sudo apt-get install prometheus-alertmanager; macOS: brew install alertmanager)."
    fi
    if [[ -z ${OTEL_EXPORTER_OTLP_ENDPOINT:-} && -z ${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-} ]]; then
        collect=yes
    fi
fi

# Refuse an address something already answers on, naming the process when ss can see it.
addrs=("${a_addrs[@]}" "$B_ADDR" "${a_fault_addrs[@]}" "$B_FAULT_LISTEN_ADDR")
[[ -n $prometheus_bin ]] && addrs+=("$PROMETHEUS_ADDR")
[[ -n $prometheus_bin && -n $alertmanager_bin ]] && addrs+=("$ALERTMANAGER_ADDR")
[[ -n $collect ]] && addrs+=("$OTLP_ADDR")
for addr in "${addrs[@]}"; do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null || continue
    users=$(ss -Hltnp "sport = :${addr##*:}" 2>/dev/null | grep -o 'users:((.*))' | head -1 || true)
    if [[ $users =~ \"([^\"]+)\",pid=([0-9]+) ]]; then
        say "$addr is already served by ${BASH_REMATCH[1]} (pid ${BASH_REMATCH[2]}): stop it first (kill ${BASH_REMATCH[2]}),"
    else
        say "$addr is already served (by a process ss cannot show this user): stop it first,"
    fi
    say "or move every port at once (e.g. PORT_BASE=23000 $0: A on 23000, B on 23001, the rest after; see --help)"
    exit 1
done

if [[ -n ${BIN_DIR:-} ]]; then
    bin=$BIN_DIR
else
    say "building the services, the traffic generator and the labs (release; the first build takes a few minutes)"
    cargo build --release --locked -p service-a -p service-b -p traffic -p lab
    bin=./target/release
fi

# Environment variables meant for one service only must not leak into the other.
unset LISTEN_ADDR
a_pids=() b_pid='' observers='' run_dir='' services_env=''
stop_all() {
    local pid
    # (An empty array expanded so that bash 3.2, macOS', takes it under set -u.)
    for pid in ${a_pids[@]+"${a_pids[@]}"} $b_pid $observers; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n $run_dir ]] && rm -rf "$run_dir"
    # Ours only: a later run-local may have written its own since.
    if [[ -n $services_env ]] && grep -q "(pid $$)" "$services_env" 2>/dev/null; then
        rm -f "$services_env"
    fi
    return 0
}
# Ctrl-C and SIGTERM are how this script is meant to end: stop our services (and what
# --observe started), exit 0. Any other way out (a failed start) stops them too and keeps
# its own status.
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null; }
# Waits (up to 10 s) until $2 listens on $3, while pid $1 lives.
await() {
    local _
    for _ in $(seq 1 100); do
        alive "$1" || { say "$2 exited during start-up (its error is in ${4:-the lines above})"; exit 1; }
        listening "$3" && return 0
        sleep 0.1
    done
    say "$2 did not start listening on $3 in 10 s"; exit 1
}

if [[ -n $observe ]]; then
    run_dir=$(mktemp -d "${TMPDIR:-/tmp}/run-local.XXXXXX")
    if [[ -n $collect ]]; then
        "$bin/lab" collect --listen "$OTLP_ADDR" 2>"$run_dir/collect.log" &
        collect_pid=$!
        observers+=" $collect_pid"
        await "$collect_pid" "the span collector" "$OTLP_ADDR" "$run_dir/collect.log"
        export OTEL_EXPORTER_OTLP_ENDPOINT="http://$OTLP_ADDR"
        # Spans reach the collector within a second, so `lab trace` need not wait long.
        export OTEL_BSP_SCHEDULE_DELAY=${OTEL_BSP_SCHEDULE_DELAY:-1000}
    fi
    if [[ -n $alertmanager_bin && -n $prometheus_bin ]]; then
        # No cluster port: a lone Alertmanager on loopback gossips with nobody.
        "$alertmanager_bin" --config.file=deploy/alertmanager/alertmanager.yml \
            --storage.path="$run_dir/alertmanager" --web.listen-address="$ALERTMANAGER_ADDR" \
            --cluster.listen-address= >"$run_dir/alertmanager.log" 2>&1 &
        am_pid=$!
        observers+=" $am_pid"
        await "$am_pid" "Alertmanager" "$ALERTMANAGER_ADDR" "$run_dir/alertmanager.log"
    fi
    if [[ -n $prometheus_bin ]]; then
        # The committed config, with this run's addresses (one target per replica of A) and
        # the rule files' full path.
        a_targets=$(printf '", "%s' "${a_addrs[@]}")
        sed -e "s|127\.0\.0\.1:8080|${a_targets:4}|" -e "s|127\.0\.0\.1:8081|$B_ADDR|" \
            -e "s|127\.0\.0\.1:9093|$ALERTMANAGER_ADDR|" -e "s|- rules/|- $PWD/deploy/prometheus/rules/|" \
            deploy/prometheus/prometheus-local.yml >"$run_dir/prometheus.yml"
        "$prometheus_bin" --config.file="$run_dir/prometheus.yml" --storage.tsdb.path="$run_dir/prometheus" \
            --web.listen-address="$PROMETHEUS_ADDR" --enable-feature=exemplar-storage \
            >"$run_dir/prometheus.log" 2>&1 &
        prometheus_pid=$!
        observers+=" $prometheus_pid"
        await "$prometheus_pid" "Prometheus" "$PROMETHEUS_ADDR" "$run_dir/prometheus.log"
    fi
fi

# Each replica of A with its own fault endpoint; B given every replica's URL,
# comma-separated (one replica: A's URL alone).
for i in "${!a_addrs[@]}"; do
    "$bin/service-a" --listen "${a_addrs[i]}" --fault-listen "${a_fault_addrs[i]}" &
    a_pids+=($!)
done
a_urls=$(printf ',http://%s' "${a_addrs[@]}")
"$bin/service-b" --listen "$B_ADDR" --provider-url "${PROVIDER_URL:-${a_urls:1}}" &
b_pid=$!

# What a replica of A is called in messages: "service A", or "replica k of A".
a_name() { if [[ $a_replicas -eq 1 ]]; then echo "service A"; else echo "replica $(($1 + 1)) of A"; fi; }
all_alive() {
    local i
    for i in "${!a_pids[@]}"; do
        alive "${a_pids[i]}" || { say "$(a_name "$i") exited during start-up (its error is above)"; return 1; }
    done
    alive "$b_pid" || { say "service B exited during start-up (its error is above)"; return 1; }
}
all_listening() {
    local addr
    for addr in "${a_addrs[@]}" "$B_ADDR"; do listening "$addr" || return 1; done
}
# Ready = accepting connections (bash's /dev/tcp, so no curl needed). Nothing is asked of
# the services, so the walkthrough's request counters start at 0; that nobody else served
# the address was checked above, and that ours are still alive is checked below.
started=''
for _ in $(seq 1 100); do
    all_alive || exit 1
    if all_listening; then started=yes; break; fi
    sleep 0.1
done
[[ -n $started ]] || { say "services did not start listening in 10 s"; exit 1; }
# Listening, and still ours: the sockets are the processes' started above.
all_alive || exit 1

# Where `lab` finds the services: services.env in lab's state directory (the same rule as
# lab's own), while this runs. The banner shows the same as export lines.
lab_env="LAB_B_URL=http://$B_ADDR
LAB_A_FAULTS=$(printf 'http://%s/faults,' "${a_fault_addrs[@]}" | sed 's/,$//')
LAB_B_FAULTS=http://$B_FAULT_LISTEN_ADDR/faults
LAB_PROMETHEUS=http://$PROMETHEUS_ADDR"
if [[ -n ${LAB_STATE_DIR:-} ]]; then
    lab_dir=$LAB_STATE_DIR
elif [[ ${XDG_STATE_HOME:-} == /* ]]; then
    lab_dir=$XDG_STATE_HOME/first-distributed-system
elif [[ ${HOME:-} == /* ]]; then
    lab_dir=$HOME/.local/state/first-distributed-system
else
    lab_dir=''
fi
lab_finds="lab needs their addresses (no state directory for services.env: set HOME):"
if [[ -n $lab_dir ]] && (umask 077 && mkdir -p "$lab_dir") 2>/dev/null; then
    services_env=$lab_dir/services.env
    if (umask 077 && printf '# Written by ./deploy/run-local.sh (pid %s) for lab: where the services it started listen. Removed when it stops.\n%s\n' "$$" "$lab_env" >"$services_env.partial" && mv "$services_env.partial" "$services_env"); then
        lab_finds="lab reads their addresses from $services_env while this runs, the same as:"
    else
        services_env=''
    fi
fi
exports=$(sed 's/^/    export /' <<<"$lab_env")
# lab looks for services.env in its state directory: when that is not the default one,
# the student's shell needs it too.
[[ -n ${LAB_STATE_DIR:-} ]] && exports+=$'\n'"    export LAB_STATE_DIR=$LAB_STATE_DIR"
replicas_flag=''
[[ $a_replicas -gt 1 ]] && replicas_flag=" --a-replicas $a_replicas"
rerun="BIN_DIR=$bin ${port_base:+PORT_BASE=$port_base }./deploy/run-local.sh${observe:+ --observe}$replicas_flag"

# The command that starts a replica of A again as this script did: the same address, its
# fault endpoint (the labs need it) and, when spans are collected, the same exporter
# settings.
restart_a() {
    local command="$bin/service-a --listen ${a_addrs[$1]} --fault-listen ${a_fault_addrs[$1]}"
    if [[ -n $collect ]]; then
        command="OTEL_EXPORTER_OTLP_ENDPOINT=$OTEL_EXPORTER_OTLP_ENDPOINT OTEL_BSP_SCHEDULE_DELAY=$OTEL_BSP_SCHEDULE_DELAY $command"
    fi
    echo "$command"
}
observed=''
[[ -n $prometheus_bin ]] && observed+="
  Prometheus            http://$PROMETHEUS_ADDR   (alerts: /alerts; \`lab check\` reads it)"
[[ -n $prometheus_bin && -n $alertmanager_bin ]] && observed+="
  Alertmanager          http://$ALERTMANAGER_ADDR"
[[ -n $collect ]] && observed+="
  span collector        http://$OTLP_ADDR   (\`$bin/lab trace <trace_id>\` prints one trace)"

# One replica: A's line, and how to stop and start it. Several: a line per replica (with
# its fault endpoint: the lab of A's replicas breaks one of them), and a restart command
# for each.
if [[ $a_replicas -eq 1 ]]; then
    stops=both
    a_lines="
  service A (provider)  http://$A_ADDR   pid ${a_pids[0]}"
    a_commands="
  stop A alone (B stays up):  kill ${a_pids[0]}
  start A again by hand:      $(restart_a 0)
                              (this script does not own it: stop it yourself afterwards)"
else
    stops="A's $a_replicas replicas and B"
    a_lines="
  service A (provider)  $a_replicas replicas: B chooses one for every attempt, a retry goes to another"
    a_commands="
  stop one replica of A (B calls the others):  kill ${a_pids[1]}   (all of them, B stays up: kill ${a_pids[*]})
  start a replica again by hand (this script does not own it: stop it yourself afterwards):"
    for i in "${!a_addrs[@]}"; do
        a_lines+="
    replica $((i + 1))           http://${a_addrs[i]}   faults http://${a_fault_addrs[i]}/faults   pid ${a_pids[i]}"
        a_commands+="
    replica $((i + 1)):  $(restart_a "$i")"
    done
fi
[[ -n $observers ]] && stops='everything it started'

cat >&2 <<MSG
$a_lines
  service B (consumer)  http://$B_ADDR   pid $b_pid$observed

  try:   curl -i -X POST http://$B_ADDR/protected-action -H 'Content-Type: application/json' \\
              -d '{"username":"divya","password":"pass123","action":"ping"}'$a_commands
  labs (break them on purpose, find out what is wrong):  $bin/lab list
  $lab_finds
$exports
  start it again without building:  $rerun
  Ctrl-C stops $stops.

MSG
# Wait until every service has exited (each may be stopped alone), or until Ctrl-C /
# SIGTERM; what --observe started goes with them.
wait "${a_pids[@]}" "$b_pid" || true
