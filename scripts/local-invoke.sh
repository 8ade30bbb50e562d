#!/usr/bin/env bash
# Invokes the relay locally against the sandbox, each event in turn, and shows
# what Dynamics received. Two local runtimes:
#
# - cargo-lambda (default): cargo lambda watch runs the debug build behind a
#   Lambda Runtime API, cargo lambda invoke sends each event; one function for
#   all the events.
# - --sam: sam build's x86_64 bootstrap, `sam local invoke` per event in a
#   container (AWS's provided.al2023 image, or the stand-in of
#   scripts/sam-image.sh when no registry serves it). The sandbox listens where
#   the container reaches it: Docker's bridge gateway (SAM_SANDBOX_BIND,
#   SAM_SANDBOX_HOST to change it; Docker Desktop: 127.0.0.1 and
#   host.docker.internal).
#
# The mapping: cargo-lambda reads the samples' events/mapping.json; --sam reads
# config/mapping.json from MappingLayer at /opt/mapping.json, as a deployment
# does (the template it runs is derived by scripts/sam-local-template.py).
#
# One sandbox for all the events. Exits non-zero when an answer reports
# failures or Dynamics did not get one call per mapped event (see
# scripts/invoke-report.py) — never trusting the runtime's own exit code alone
# (`sam local invoke` exits 0 when the function failed).
#
# usage: scripts/local-invoke.sh [--sam] [EVENT.json ...]     (default: events/direct.json)
# Installs cargo-lambda / the SAM CLI if missing. Logs: $CARGO_TARGET_DIR/local-invoke/
# (--sam: $CARGO_TARGET_DIR/sam-local/).
set -euo pipefail
cd "$(dirname "$0")/.."
runtime=cargo-lambda
mapping=events/mapping.json
if [ "${1:-}" = --sam ]; then runtime=sam mapping=config/mapping.json; shift; fi
[ $# -gt 0 ] || set -- events/direct.json
for event in "$@"; do
  [ -f "$event" ] || { echo "no such event file: $event" >&2; exit 2; }
done
export SAM_CLI_TELEMETRY=0
if [ $runtime = sam ]; then
  command -v sam >/dev/null || make --no-print-directory tools-sam
  command -v sam >/dev/null || { echo "sam is not on PATH after make tools-sam" >&2; exit 2; }
  docker info >/dev/null 2>&1 || { echo "Docker is not running: sam local needs it (README \"Local runtimes\")" >&2; exit 2; }
fi
# sam build runs cargo lambda too.
command -v cargo-lambda >/dev/null || make --no-print-directory tools-lambda
command -v cargo-lambda >/dev/null || { echo "cargo-lambda is not on PATH after make tools-lambda" >&2; exit 2; }

# The sandbox's address: loopback, or where the function's container reaches the host.
bind=127.0.0.1
if [ $runtime = sam ]; then
  gateway=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}' 2>/dev/null || true)
  bind=${SAM_SANDBOX_BIND:-${gateway:-172.17.0.1}}
fi
free_port() { python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$bind"; }
sandbox_port=${SANDBOX_PORT:-$(free_port)}
sandbox="http://$bind:$sandbox_port"
# The URL the function is given.
function_sandbox=$sandbox
if [ $runtime = sam ]; then function_sandbox="http://${SAM_SANDBOX_HOST:-$bind}:$sandbox_port"; fi
logs=${CARGO_TARGET_DIR:-target}/local-invoke
[ $runtime = cargo-lambda ] || logs=${CARGO_TARGET_DIR:-target}/sam-local
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

# Build first, so that neither the sandbox nor the first invocation compiles.
if [ $runtime = cargo-lambda ]; then
  cargo build --quiet --bin d365-trigger-relay --bin d365-sandbox
else
  cargo build --quiet --bin d365-sandbox
fi

if [ $runtime = sam ]; then
  # The base image (AWS's, else the stand-in), then sam build: x86_64, in a
  # build directory of its own so that `make sam-build`'s (arm64) stays. cargo
  # reuses its build when the sources have not changed. The release profile's
  # fat LTO and single codegen unit cost minutes and change no behaviour: the
  # local build goes without them, in a cargo target directory of its own
  # (SAM_LOCAL_PROFILE=release keeps the release profile as it is).
  image=$(scripts/sam-image.sh)
  image_kind=${image%% *} image_name=${image#* }
  build_dir=.aws-sam/sam-local
  # template.yaml plus the sam-local-only declarations; beside it, so that its relative paths hold.
  local_template=.sam-local.template.yaml
  python3 scripts/sam-local-template.py template.yaml "$local_template"
  parameters=(--parameter-overrides Architecture=x86_64 SamLocal=true)
  build_env=()
  if [ "${SAM_LOCAL_PROFILE:-quick}" != release ]; then
    build_env=(CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/sam-local-build" CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16)
  fi
  echo "sam build (x86_64, $build_dir${build_env[*]:+, release profile without LTO}; logs: $logs/sam-build.log)"
  if ! env ${build_env[@]+"${build_env[@]}"} sam build --build-dir "$build_dir" --template "$local_template" "${parameters[@]}" >"$logs/sam-build.log" 2>&1; then
    tail -30 "$logs/sam-build.log" >&2
    exit 1
  fi
  bootstrap=$build_dir/RelayFunction/bootstrap
  # The layer as sam build left it must hold the file D365_MAPPING_FILE names.
  scripts/check-mapping-layer.py "$build_dir" >>"$logs/sam-build.log" 2>&1 || { scripts/check-mapping-layer.py "$build_dir"; exit 1; }
  # AL2023 has glibc 2.34: a binary needing more would run on the stand-in
  # (Debian 12, 2.36) and fail in Lambda.
  glibc=$(grep -aoE 'GLIBC_2\.[0-9]+(\.[0-9]+)?' "$bootstrap" | sort -uV | tail -1)
  if [ -n "$glibc" ] && [ "$(printf '%s\n' "$glibc" GLIBC_2.34 | sort -V | tail -1)" != GLIBC_2.34 ]; then
    echo "$bootstrap needs $glibc; Lambda's provided.al2023 has GLIBC_2.34" >&2
    exit 1
  fi
  if [ "$image_kind" = real ]; then
    echo "base image: $image_name (AWS's)"
    image_args=()
  else
    echo "base image: $image_name — a stand-in for public.ecr.aws/lambda/provided:al2023-x86_64 (no registry here; Debian 12, glibc 2.36; the bootstrap needs ${glibc:-no versioned glibc})"
    image_args=(--invoke-image "$image_name")
  fi
fi

cargo run --quiet --bin d365-sandbox -- --config sandbox/config.json --bind "$bind" --port "$sandbox_port" >"$logs/sandbox.log" 2>&1 &
sandbox_pid=$!
wait_for 60 "$sandbox/_sandbox/stats" "$sandbox_pid" "$logs/sandbox.log"

# The function's settings. cargo lambda watch passes its own environment on:
# settings from the caller's shell (D365_IDEMPOTENCY_TABLE, AWS_PROFILE…) would
# take the function elsewhere than the sandbox, so they are cleared. sam local
# passes only the variables the template declares (with SamLocal=true): their
# values go in --env-vars; the mapping is MappingLayer's /opt/mapping.json, as deployed.
for name in $(compgen -e | grep -E '^(D365_|AWS_)' || true); do unset "$name"; done
if [ $runtime = cargo-lambda ]; then
  export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=sandbox AWS_SECRET_ACCESS_KEY=sandbox
else
  # No AWS profile for SAM: it then gives the function dummy credentials instead
  # of looking the account up with STS (seconds per invocation with no network).
  export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
fi
# Empty means unset: sam local would give D365_DEAD_LETTER_QUEUE_URL the DLQ's
# logical id (it resolves a resource's Ref to its name).
settings=(
  AWS_ENDPOINT_URL_SECRETS_MANAGER="$function_sandbox"
  D365_SECRET_ID=d365/relay-demo D365_WEBHOOK_AUTH=hmac,key,writekey
  D365_AUTHORITY_HOST="$function_sandbox" D365_DATAVERSE_BASE_URL="$function_sandbox"
  D365_DEAD_LETTER_QUEUE_URL=
)
if [ $runtime = cargo-lambda ]; then
  invoke_port=${INVOKE_PORT:-$(free_port)}
  export "${settings[@]}" D365_MAPPING_FILE="$mapping"
  cargo lambda watch --bin d365-trigger-relay --ignore-changes --quiet \
    --invoke-address 127.0.0.1 --invoke-port "$invoke_port" >"$logs/watch.log" 2>&1 &
  watch_pid=$!
  wait_for 60 "http://127.0.0.1:$invoke_port/" "$watch_pid" "$logs/watch.log"
  function_log=$logs/watch.log
else
  # D365_MAPPING stays empty (unset): the function reads D365_MAPPING_FILE=/opt/mapping.json.
  python3 - "$logs/env.json" "${settings[@]}" D365_MAPPING= <<'EOF'
import json, sys
path, *pairs = sys.argv[1:]
variables = dict(pair.split("=", 1) for pair in pairs)
json.dump({"RelayFunction": variables}, open(path, "w"), indent=2)
EOF
  function_log=$logs/invoke.log
  : >"$function_log"
fi

# One invocation: $1 the payload, answer in $work/answer.json.
invoke() {
  if [ $runtime = cargo-lambda ]; then
    ${limit[@]+"${limit[@]}"} cargo lambda invoke d365-trigger-relay --invoke-address 127.0.0.1 --invoke-port "$invoke_port" \
      --data-file "$1" --output-format json >"$work/answer.json" 2>"$work/invoke.err"
  else
    echo "── $1" >>"$function_log"
    # stdout is the function's answer; the container's log (START, the relay's
    # JSON lines, REPORT) goes to stderr.
    ${limit[@]+"${limit[@]}"} sam local invoke RelayFunction --template "$build_dir/template.yaml" "${parameters[@]}" \
      --event "$1" --env-vars "$logs/env.json" --region us-east-1 --skip-pull-image ${image_args[@]+"${image_args[@]}"} \
      >"$work/answer.json" 2>"$work/invoke.err"
    local status=$?
    cat "$work/invoke.err" >>"$function_log"
    return $status
  fi
}

webhook_secret=$(python3 -c 'import json; print(json.load(open("sandbox/config.json"))["secrets"]["d365/relay-demo"]["webhook_secret"])')
limit=()
if command -v timeout >/dev/null; then limit=(timeout 300); fi
if [ $runtime = cargo-lambda ]; then how="cargo lambda invoke included"; else how="sam local invoke, a container per event, included"; fi
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
  if ! invoke "$payload"; then
    echo "   ✗ $runtime could not invoke the function:"; tail -20 "$work/invoke.err"; cat "$work/answer.json"
    echo "   the function's log: $function_log"
    failed+=("$event")
    continue
  fi
  python3 -c "import time; print(f'   answered in {(time.time() - $t0) * 1000:.0f} ms ($how)')"
  curl -s "$sandbox/_sandbox/signals" | python3 -c "import json, sys; json.dump(json.load(sys.stdin)[$before:], sys.stdout)" >"$work/signals.json"
  if ! scripts/invoke-report.py "$event" "$work/answer.json" "$work/signals.json" --mapping "$mapping"; then
    failed+=("$event")
    [ $runtime = cargo-lambda ] || { echo "   the function's log:"; grep -E '"level":"(WARN|ERROR)"|errorMessage|panicked' "$work/invoke.err" | tail -5 | sed 's/^/      /'; }
  fi
done

echo
if [ $runtime = cargo-lambda ]; then through="cargo lambda's Runtime API"; else through="sam local invoke ($image_kind image $image_name)"; fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "✗ ${#failed[@]} of $# event file(s) not delivered as expected through $through: ${failed[*]} (logs: $logs/)"
  exit 1
fi
echo "✓ $# event file(s) delivered through $through in $((SECONDS - started)) s"
