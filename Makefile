# d365-trigger-relay — every target installs what it needs.
SHELL := /bin/bash
export SAM_CLI_TELEMETRY := 0
CARGO ?= cargo
PIP ?= python3 -m pip
EVENT ?= events/direct.json
ARCH ?= arm64
SANDBOX_PORT ?= 8765
SANDBOX_BIND ?= 127.0.0.1

.PHONY: docs docs-check tools-mdbook demo test lint tools-moto tools-sdk tools-lambda tools-sam build validate sam-build sandbox invoke smoke sam-image sam-local sam-smoke deploy bench bench-compare tools-strace chaos sign-events fuzz fuzz-smoke tools-fuzz clean

## The relay against the sandbox on every sample event, showing what Dynamics received.
demo:
	$(CARGO) run --quiet --example demo

## Unit, integration and property tests (starts what they need on loopback).
test: tools-moto tools-sdk
	$(CARGO) test --all-targets

## The manual (mdBook) into target/book, then every internal link and #anchor of the README,
## CONTRIBUTING.md and the built HTML checked (scripts/docs-links.py); fails on a broken one.
MDBOOK_VERSION ?= 0.4.40
MDBOOK ?= mdbook
docs: tools-mdbook
	$(MDBOOK) build docs
	python3 scripts/docs-links.py --md README.md CONTRIBUTING.md --html target/book

## The built index page and a recipe rendered in headless Chromium (Debian's package, installed
## with apt when missing), every image loaded; screenshots in target/docs-check/.
docs-check:
	@scripts/docs-check.sh target/book index.html recipes/order-confirmation.html

## mdbook at the pinned version, installed with cargo only when missing or another version.
tools-mdbook:
	@$(MDBOOK) --version 2>/dev/null | grep -qx 'mdbook v$(MDBOOK_VERSION)' || $(CARGO) install mdbook --version $(MDBOOK_VERSION) --locked

## moto's server (a DynamoDB emulator) for the idempotency tests.
tools-moto:
	@python3 -c "import moto.server, flask, flask_cors" 2>/dev/null || $(PIP) install --quiet 'moto[server]'

## Segment's Python SDK, which the analytics-SDK test points at the relay (SPEC §20).
tools-sdk:
	@python3 -c "import segment.analytics" 2>/dev/null || $(PIP) install --quiet 'segment-analytics-python>=2.4,<3'

## rustfmt (rustfmt.toml) and clippy with warnings as errors, over the workspace.
lint:
	@rustup component add rustfmt clippy >/dev/null 2>&1 || true
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Tools from PyPI, installed on first use.
tools-lambda:
	@command -v cargo-lambda >/dev/null || { $(PIP) install --quiet cargo-lambda && (pyenv rehash 2>/dev/null || true); }
tools-sam:
	@command -v sam >/dev/null || { $(PIP) install --quiet aws-sam-cli && (pyenv rehash 2>/dev/null || true); }

## The Lambda artefact: target/lambda/d365-trigger-relay/bootstrap
build: tools-lambda
	@if [ "$(ARCH)" = "arm64" ]; then rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true; fi
	cargo lambda build --release --bin d365-trigger-relay $(if $(filter arm64,$(ARCH)),--arm64,--x86-64)

## cfn-lint and SAM's own checks of template.yaml
validate: tools-sam
	sam validate --lint

## sam build (cargo-lambda, no Docker); ARCH=x86_64 where the arm64 target cannot be added
sam-build: tools-sam tools-lambda
	@if [ "$(ARCH)" = "arm64" ]; then rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true; fi
	sam build --parameter-overrides Architecture=$(ARCH)

## The sandbox in the foreground (Ctrl-C stops it); SANDBOX_BIND=172.17.0.1 for sam local's containers.
sandbox:
	$(CARGO) run --quiet --bin d365-sandbox -- --bind $(SANDBOX_BIND) --port $(SANDBOX_PORT)

## Local invocation through the Lambda Runtime API: cargo lambda watch + invoke, against the sandbox.
## Fails when the answer reports failures; EVENT may name several files.
invoke: tools-lambda
	@scripts/local-invoke.sh $(EVENT)

## Every sample event through cargo lambda's Runtime API (one function, one sandbox).
SAMPLES := $(filter-out events/mapping.json,$(wildcard events/*.json))
smoke: tools-lambda
	@scripts/local-invoke.sh $(SAMPLES)

## The base image of sam local (x86_64): AWS's provided.al2023 when Docker can pull it, else a
## stand-in built once from Debian packages (needs root and debootstrap). Prints which.
sam-image:
	@scripts/sam-image.sh

## sam build (x86_64) + sam local invoke in Docker, against the sandbox; fails when the answer
## reports failures (not on SAM's exit code). EVENT may name several files.
sam-local: tools-sam tools-lambda
	@scripts/local-invoke.sh --sam $(EVENT)

## Every sample event through sam local invoke (one sandbox, a container per event).
sam-smoke: tools-sam tools-lambda
	@scripts/local-invoke.sh --sam $(SAMPLES)

## Deploy to your AWS account (not run by CI).
deploy: sam-build
	sam deploy --guided

## Re-sign the webhook sample events (signatures are valid for 5 minutes).
sign-events:
	python3 scripts/sign-events.py

## Benchmarks: Markdown table in target/bench.md (see README "Performance").
## BENCH_STRICT_ROOTS=1 fails when the binary reads the root certificate store more than once at init.
bench: tools-moto tools-strace
	$(CARGO) build --release --bin d365-trigger-relay
	$(CARGO) run --release --example bench
	$(CARGO) run --release --example burst
	$(CARGO) bench --bench mapping -- --noplot

## Debian's strace, with which the bench counts the binary's root-store reads at init.
tools-strace:
	@command -v strace >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq strace >/dev/null; }

## Two revisions' bench figures side by side (uncapped, capped, binary; medians of 3 interleaved runs):
## make bench-compare OLD=706df39 NEW=HEAD. Builds each under target/bench-compare/.
NEW ?= HEAD
bench-compare: tools-strace
	@test -n "$(OLD)" || { echo "usage: make bench-compare OLD=<rev> [NEW=<rev>, default HEAD]" >&2; exit 2; }
	@scripts/bench-compare.sh $(OLD) $(NEW)

## A longer chaos run (20,000 messages).
chaos:
	CHAOS_MESSAGES=20000 $(CARGO) test --release --test reliability chaos -- --nocapture

## Every fuzz target (fuzz/, libFuzzer) for FUZZ_SECONDS each: a panic, a hang over 1 s or an
## allocation over 64 MB for one input fails it (reproducer in fuzz/artifacts/). FUZZ_TARGETS
## names some; prints inputs executed and corpus sizes. Needs no nightly toolchain (RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
CARGO_FUZZ_VERSION ?= 0.13.1
fuzz: tools-fuzz
	fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## Each fuzz target for a few seconds, and every input that once failed (CI: the targets keep building).
FUZZ_SMOKE_SECONDS ?= 5
fuzz-smoke: tools-fuzz
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

## cargo-fuzz at the pinned version, installed with cargo only when missing or another version.
tools-fuzz:
	@cargo fuzz --version 2>/dev/null | grep -qx 'cargo-fuzz $(CARGO_FUZZ_VERSION)' || $(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked

clean:
	$(CARGO) clean
	rm -rf .aws-sam
