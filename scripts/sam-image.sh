#!/usr/bin/env bash
# The base image `sam local` runs the relay in (x86_64), and which one it is.
#
# - AWS's image public.ecr.aws/lambda/provided:al2023-x86_64 when Docker has it
#   or can pull it;
# - else a stand-in built once from Debian packages (debootstrap, no registry
#   needed): Debian 12 minbase with ca-certificates, the AL2023 image's ENV,
#   WORKDIR and entrypoint. SAM adds its Runtime Interface Emulator on top, as
#   it does to AWS's image. Debian 12's glibc is 2.36 where AL2023 has 2.34:
#   scripts/sam-local.sh checks that the bootstrap needs no more than 2.34.
#
# usage: scripts/sam-image.sh [--build]   (--build: rebuild the stand-in)
# Prints one line, `real IMAGE` or `stand-in IMAGE`; progress goes to stderr.
# Needs a running Docker; building the stand-in needs root and debootstrap
# (installed with apt-get when missing). DEBIAN_MIRROR overrides the mirror
# read from /etc/apt/sources.list*; SAM_IMAGE_PULL=0 skips the pull attempt.
set -euo pipefail
cd "$(dirname "$0")/.."

REAL=public.ecr.aws/lambda/provided:al2023-x86_64
STAND_IN=d365-trigger-relay/provided-stand-in:al2023-x86_64
SUITE=bookworm

say() { echo "sam-image: $*" >&2; }

docker info >/dev/null 2>&1 || { say "Docker is not running (see README \"Local runtimes\")"; exit 2; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

if [ "${1:-}" != --build ]; then
  if have "$REAL"; then echo "real $REAL"; exit 0; fi
  if [ "${SAM_IMAGE_PULL:-1}" != 0 ]; then
    say "pulling $REAL"
    if timeout 120 docker pull --quiet "$REAL" >/dev/null 2>&1; then echo "real $REAL"; exit 0; fi
    say "$REAL cannot be pulled (no registry): using a stand-in built from Debian packages"
  fi
  if have "$STAND_IN"; then echo "stand-in $STAND_IN"; exit 0; fi
fi

# The stand-in.
[ "$(id -u)" = 0 ] || { say "building the stand-in needs root (debootstrap); run as root or: sudo $0 --build"; exit 2; }
if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >/tmp/sam-image-apt.log 2>&1 ||
    { tail -20 /tmp/sam-image-apt.log >&2; exit 1; }
fi

# The mirror apt already uses (the first URIs:/deb line), else Debian's CDN.
mirror=${DEBIAN_MIRROR:-$(
  { grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true
    grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print ($2 ~ /^\[/) ? $3 : $2}' || true; } |
    grep -v security | head -1 || true
)}
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/sam-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
say "debootstrap $SUITE (minbase, ca-certificates) from $mirror"
started=$SECONDS
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  exit 1
}
# What a Lambda function never needs: documentation, manuals, apt's lists.
rm -rf "$rootfs"/usr/share/{doc,man,info,locale} "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
mkdir -p "$rootfs"/var/task "$rootfs"/var/runtime "$rootfs"/opt
# AWS's entrypoint: the handler as the only argument; the emulator when there is
# no Runtime API (SAM replaces the entrypoint with its own emulator anyway).
cat >"$rootfs/lambda-entrypoint.sh" <<'EOF'
#!/bin/sh
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"
RUNTIME_ENTRYPOINT=/var/runtime/bootstrap
[ -x "$RUNTIME_ENTRYPOINT" ] || RUNTIME_ENTRYPOINT=/var/task/bootstrap
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie "$RUNTIME_ENTRYPOINT"
else
  exec "$RUNTIME_ENTRYPOINT"
fi
EOF
chmod 755 "$rootfs/lambda-entrypoint.sh"

glibc=$(ls "$rootfs"/usr/lib/x86_64-linux-gnu/libc.so.6 >/dev/null && chroot "$rootfs" /usr/bin/ldd --version 2>/dev/null | head -1 | awk '{print $NF}' || echo "?")
tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=en_US.UTF-8' \
  --change 'ENV TZ=:/etc/localtime' \
  --change 'ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin' \
  --change 'ENV LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib' \
  --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
  --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
  --change 'WORKDIR /var/task' \
  --change 'ENTRYPOINT ["/lambda-entrypoint.sh"]' \
  --change "LABEL org.opencontainers.image.description=\"Stand-in for $REAL: Debian $SUITE minbase, glibc $glibc\"" \
  - "$STAND_IN" >/dev/null
# SAM's image on top of the old stand-in is stale now.
docker image rm "${STAND_IN%%:*}:rapid-x86_64" >/dev/null 2>&1 || true
say "built $STAND_IN in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "$STAND_IN" | awk '{printf "%.0f MB", $1 / 1e6}'), glibc $glibc)"
echo "stand-in $STAND_IN"
