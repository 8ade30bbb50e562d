#!/usr/bin/env bash
# Invokes the relay through a local Lambda Runtime API (cargo lambda watch runs
# the function, cargo lambda invoke sends each event), against the sandbox, and
# shows what Dynamics received. One sandbox and one function for all the events.
# Exits non-zero when an answer reports failures or Dynamics did not get one
# call per mapped event (see scripts/invoke-report.py).
#
# usage: scripts/local-invoke.sh [EVENT.json ...]     (default: events/direct.json)
# Installs cargo-lambda if missing (`make tools-lambda`). Logs: $CARGO_TARGET_DIR/local-invoke/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- events/direct.json
for event in "$@"; do
  [ -f "$event" ] || { echo "no such event file: $event" >&2; exit 2; }
done
command -v cargo-lambda >/dev/null || make --no-print-directory tools-lambda
command -v cargo-lambda >/dev/null || { echo "cargo-lambda is not on PATH after make tools-lambda" >&2; exit 2; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
sandbox_port=${SANDBOX_PORT:-$(free_port)}
invoke_port=${INVOKE_PORT:-$(free_port)}
sandbox="http://127.0.0.1:$sandbox_port"
logs=${CARGO_TARGET_DIR:-target}/local-invoke
mkdir -p "$logs"
work=$(mktemp -d)
sandbox_pid= watch_pid=

stop() {
  # cargo lambda watch runs the function in a process group of its own: stop
  # its children by pid as well as watch itself.
  if [ -n "$watch_pid" ]; then
    children=$(pgrep -P "$watch_pid" 2>/dev/null || true)
    kill "$watch_pid" $children 2>/dev/null || true
  fi
  [ -z "$sandbox_pid" ] || kill "$sandbox_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Wait up to $1 seconds for $2 to answer HTTP while process $3 lives.
wait_for() {
  local seconds=$1 url=$2 pid=$3 log=$4
  for _ in $(seq 1 $((seconds * 5))); do
    curl -s -o /dev/null "$url" && return 0
    kill -0 "$pid" 2>/dev/null || { echo "it exited; see $log:" >&2; tail -20 "$log" >&2; exit 1; }
    sleep 0.2
  done
  echo "$url did not answer within $seconds s; see $log" >&2
  exit 1
}

# Build first, so that neither the sandbox nor watch's first invocation compiles.
cargo build --quiet --bin d365-trigger-relay --bin d365-sandbox

cargo run --quiet --bin d365-sandbox -- --config sandbox/config.json --port "$sandbox_port" >"$logs/sandbox.log" 2>&1 &
sandbox_pid=$!
wait_for 60 "$sandbox/_sandbox/stats" "$sandbox_pid" "$logs/sandbox.log"

# The function's settings; cargo lambda watch passes its own environment on.
# Settings from the caller's shell (D365_IDEMPOTENCY_TABLE, AWS_PROFILE…) would
# take the function elsewhere than the sandbox: they are cleared.
for name in $(compgen -e | grep -E '^(D365_|AWS_)' || true); do unset "$name"; done
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=sandbox AWS_SECRET_ACCESS_KEY=sandbox \
  AWS_ENDPOINT_URL_SECRETS_MANAGER=$sandbox \
  D365_SECRET_ID=d365/relay-demo D365_MAPPING_FILE=events/mapping.json D365_WEBHOOK_AUTH=hmac,key,writekey \
  D365_AUTHORITY_HOST=$sandbox D365_DATAVERSE_BASE_URL=$sandbox
cargo lambda watch --bin d365-trigger-relay --ignore-changes --quiet \
  --invoke-address 127.0.0.1 --invoke-port "$invoke_port" >"$logs/watch.log" 2>&1 &
watch_pid=$!
wait_for 60 "http://127.0.0.1:$invoke_port/" "$watch_pid" "$logs/watch.log"

webhook_secret=$(python3 -c 'import json; print(json.load(open("sandbox/config.json"))["secrets"]["d365/relay-demo"]["webhook_secret"])')
limit=()
if command -v timeout >/dev/null; then limit=(timeout 300); fi
failed=()
started=$SECONDS
for event in "$@"; do
  echo "── $event"
  payload="$work/$(basename "$event")"
  cp "$event" "$payload"
  # Webhook samples are signed now, in the copy: signatures are valid for 5 minutes.
  if grep -qi '"x-signature"' "$payload"; then
    python3 scripts/sign-events.py --secret "$webhook_secret" "$payload" >/dev/null
  fi
  before=$(curl -s "$sandbox/_sandbox/signals" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
  t0=$(python3 -c 'import time; print(time.time())')
  if ! ${limit[@]+"${limit[@]}"} cargo lambda invoke d365-trigger-relay --invoke-address 127.0.0.1 --invoke-port "$invoke_port" \
      --data-file "$payload" --output-format json >"$work/answer.json" 2>"$work/invoke.err"; then
    echo "   ✗ cargo lambda invoke failed:"; cat "$work/invoke.err" "$work/answer.json"
    echo "   the function's log: $logs/watch.log"; tail -5 "$logs/watch.log"
    failed+=("$event")
    continue
  fi
  python3 -c "import time; print(f'   answered in {(time.time() - $t0) * 1000:.0f} ms (cargo lambda invoke included)')"
  curl -s "$sandbox/_sandbox/signals" | python3 -c "import json, sys; json.dump(json.load(sys.stdin)[$before:], sys.stdout)" >"$work/signals.json"
  scripts/invoke-report.py "$event" "$work/answer.json" "$work/signals.json" --mapping events/mapping.json || failed+=("$event")
done

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "✗ ${#failed[@]} of $# event file(s) not delivered as expected: ${failed[*]} (logs: $logs/)"
  exit 1
fi
echo "✓ $# event file(s) delivered through cargo lambda's Runtime API in $((SECONDS - started)) s"
