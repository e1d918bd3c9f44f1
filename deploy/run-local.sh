#!/usr/bin/env bash
# Starts service A and service B on this machine as two separate processes, waits until
# both accept connections, prints their URLs, and stops both on Ctrl-C. No Docker needed.
#
# Each service runs on its own: stop A (the printed `kill` command) and B keeps serving,
# answering 503 "provider unavailable"; start A again (the printed command) and B recovers.
#
# It refuses to start when something already serves either address (an A started by hand
# earlier, say), and when either service exits during start-up. The PIDs it prints are its
# own children; Ctrl-C or SIGTERM stops exactly those, and it exits 0.
#
# Settings come from the services' own flags' environment variables, e.g.
#   PROVIDER_TIMEOUT_MS=500 ./deploy/run-local.sh
# Set A_ADDR / B_ADDR to move them off 127.0.0.1:8080 / 127.0.0.1:8081, and BIN_DIR to run
# binaries already built there instead of building the release ones (the tests do).
#
# Both services also get their fault endpoint, on loopback only, for the labs (`lab list`):
# A on 127.0.0.1:9180, B on 127.0.0.1:9181 (A_FAULT_LISTEN_ADDR / B_FAULT_LISTEN_ADDR).
set -euo pipefail
cd "$(dirname "$0")/.."

A_ADDR=${A_ADDR:-127.0.0.1:8080}
B_ADDR=${B_ADDR:-127.0.0.1:8081}
export A_FAULT_LISTEN_ADDR=${A_FAULT_LISTEN_ADDR:-127.0.0.1:9180}
export B_FAULT_LISTEN_ADDR=${B_FAULT_LISTEN_ADDR:-127.0.0.1:9181}

say() { echo "run-local: $*" >&2; }

# Refuse an address something already answers on, naming the process when ss can see it.
for addr in "$A_ADDR" "$B_ADDR"; do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null || continue
    users=$(ss -Hltnp "sport = :${addr##*:}" 2>/dev/null | grep -o 'users:((.*))' | head -1 || true)
    if [[ $users =~ \"([^\"]+)\",pid=([0-9]+) ]]; then
        say "$addr is already served by ${BASH_REMATCH[1]} (pid ${BASH_REMATCH[2]}): stop it first (kill ${BASH_REMATCH[2]}),"
    else
        say "$addr is already served (by a process ss cannot show this user): stop it first,"
    fi
    say "or set A_ADDR / B_ADDR to other addresses (e.g. A_ADDR=127.0.0.1:18080 B_ADDR=127.0.0.1:18081 $0)"
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
a_pid='' b_pid=''
stop_all() {
    local pid
    for pid in $a_pid $b_pid; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
# Ctrl-C and SIGTERM are how this script is meant to end: stop our two, exit 0. Any other
# way out (a failed start) stops them too and keeps its own status.
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

"$bin/service-a" --listen "$A_ADDR" &
a_pid=$!
"$bin/service-b" --listen "$B_ADDR" --provider-url "${PROVIDER_URL:-http://$A_ADDR}" &
b_pid=$!

# Ready = accepting connections (bash's /dev/tcp, so no curl needed). Nothing is asked of
# the services, so the walkthrough's request counters start at 0; that nobody else served
# the address was checked above, and that our two are still alive is checked below.
listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null; }
started=''
for _ in $(seq 1 100); do
    alive "$a_pid" || { say "service A exited during start-up (its error is above)"; exit 1; }
    alive "$b_pid" || { say "service B exited during start-up (its error is above)"; exit 1; }
    if listening "$A_ADDR" && listening "$B_ADDR"; then started=yes; break; fi
    sleep 0.1
done
[[ -n $started ]] || { say "services did not start listening in 10 s"; exit 1; }
# Listening, and still ours: the sockets are the processes' started above.
alive "$a_pid" && alive "$b_pid" || { say "a service exited during start-up"; exit 1; }

cat >&2 <<MSG

  service A (provider)  http://$A_ADDR   pid $a_pid
  service B (consumer)  http://$B_ADDR   pid $b_pid

  try:   curl -i -X POST http://$B_ADDR/protected-action -H 'Content-Type: application/json' \\
              -d '{"username":"divya","password":"pass123","action":"ping"}'
  stop A alone (B stays up):  kill $a_pid
  start A again by hand:      $bin/service-a --listen $A_ADDR
                              (this script does not own it: stop it yourself afterwards)
  labs (break them on purpose, find out what is wrong):  $bin/lab list
  Ctrl-C stops both.

MSG
# Wait until both have exited (each may be stopped alone), or until Ctrl-C / SIGTERM.
wait || true
