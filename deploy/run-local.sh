#!/usr/bin/env bash
# Starts service A and service B on this machine as two separate processes, waits until
# both answer /health, prints their URLs, and stops both on Ctrl-C. No Docker needed.
#
# Each service runs on its own: stop A (the printed `kill` command) and B keeps serving,
# answering 503 "provider unavailable"; start A again (the printed command) and B recovers.
#
# Settings come from the services' own flags' environment variables, e.g.
#   PROVIDER_TIMEOUT_MS=500 ./deploy/run-local.sh
# Set A_ADDR / B_ADDR to move them off 127.0.0.1:8080 / 127.0.0.1:8081.
set -euo pipefail
cd "$(dirname "$0")/.."

A_ADDR=${A_ADDR:-127.0.0.1:8080}
B_ADDR=${B_ADDR:-127.0.0.1:8081}
PROFILE_DIR=release

echo "building service-a and service-b (release)..." >&2
cargo build --release --locked -q -p service-a -p service-b

# Environment variables meant for one service only must not leak into the other.
unset LISTEN_ADDR
pids=()
stop_all() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

./target/$PROFILE_DIR/service-a --listen "$A_ADDR" &
pids+=($!); a_pid=$!
./target/$PROFILE_DIR/service-b --listen "$B_ADDR" --provider-url "${PROVIDER_URL:-http://$A_ADDR}" &
pids+=($!); b_pid=$!

healthy() { # addr: true when GET /health answers 200 (bash's /dev/tcp, so no curl needed)
    local host=${1%:*} port=${1##*:}
    (
        exec 3<>"/dev/tcp/$host/$port" || exit 1
        printf 'GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" >&3
        read -r -t 2 status <&3 && [[ $status == *" 200 "* ]]
    ) 2>/dev/null
}
for _ in $(seq 1 100); do
    if healthy "$A_ADDR" && healthy "$B_ADDR"; then break; fi
    kill -0 "$a_pid" 2>/dev/null && kill -0 "$b_pid" 2>/dev/null || { echo "a service exited during start-up" >&2; exit 1; }
    sleep 0.1
done
healthy "$A_ADDR" && healthy "$B_ADDR" || { echo "services did not become healthy in 10 s" >&2; exit 1; }

cat >&2 <<MSG

  service A (provider)  http://$A_ADDR   pid $a_pid
  service B (consumer)  http://$B_ADDR   pid $b_pid

  try:   curl -i -X POST http://$B_ADDR/protected-action -H 'Content-Type: application/json' \\
              -d '{"username":"divya","password":"pass123","action":"ping"}'
  stop A alone (B stays up):  kill $a_pid
  Ctrl-C stops both.

MSG
wait
