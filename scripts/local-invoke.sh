#!/usr/bin/env bash
# Invokes the relay through a local Lambda Runtime API (cargo lambda watch) with
# a sample event, against the sandbox, then shows what Dynamics received.
# usage: scripts/local-invoke.sh events/sqs-standard.json
set -euo pipefail
event=${1:-events/direct.json}
port=${SANDBOX_PORT:-8765}
sandbox="http://127.0.0.1:$port"
python3 scripts/sign-events.py >/dev/null

cargo build --quiet --bin d365-sandbox
target/debug/d365-sandbox --port "$port" >/tmp/d365-sandbox.log 2>&1 &
sandbox_pid=$!
export AWS_ENDPOINT_URL_SECRETS_MANAGER=$sandbox AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=sandbox AWS_SECRET_ACCESS_KEY=sandbox \
  D365_SECRET_ID=d365/relay-demo D365_MAPPING_FILE=events/mapping.json \
  D365_AUTHORITY_HOST=$sandbox D365_DATAVERSE_BASE_URL=$sandbox
cargo lambda watch --only-lambda-apis >/tmp/cargo-lambda-watch.log 2>&1 &
watch_pid=$!
trap 'kill $watch_pid $sandbox_pid 2>/dev/null || true' EXIT

for _ in $(seq 1 600); do
  if cargo lambda invoke d365-trigger-relay --data-file "$event" 2>/dev/null; then
    echo
    echo "What Dynamics received:"
    curl -s "$sandbox/_sandbox/signals" | python3 -m json.tool
    exit 0
  fi
  sleep 1
done
echo "the local runtime did not answer; see /tmp/cargo-lambda-watch.log" >&2
exit 1
