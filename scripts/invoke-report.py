#!/usr/bin/env python3
"""Shows a local invocation's answer and what Dynamics received; judges them.

usage: scripts/invoke-report.py EVENT ANSWER SIGNALS [--mapping events/mapping.json]

EVENT is the payload that was invoked, ANSWER the function's answer (JSON),
SIGNALS the sandbox's GET /_sandbox/signals for this invocation only. Exits 1
when the answer reports failures (SQS: batchItemFailures; webhook: a status
other than 2xx; summary: failed), when Dynamics did not accept every call, or
when the number of calls is not the number of mapped events in EVENT (unmapped
events are dropped). Standard library only.
"""
import argparse, base64, json, sys


def events_of(payload):
    """The events a payload carries, or None where this script cannot tell."""
    def unwrap(value):
        if isinstance(value, list):
            return value
        if isinstance(value, dict) and isinstance(value.get("batch"), list):
            return value["batch"]
        return [value]

    if isinstance(payload, dict) and isinstance(payload.get("Records"), list):
        events = []
        for record in payload["Records"]:
            try:
                events += unwrap(json.loads(record.get("body") or ""))
            except ValueError:
                events.append(None)
        return events
    if isinstance(payload, dict) and ("requestContext" in payload or "httpMethod" in payload):
        body = payload.get("body") or ""
        try:
            return unwrap(json.loads(base64.b64decode(body) if payload.get("isBase64Encoded") else body))
        except ValueError:
            return None
    return unwrap(payload)


def expected_calls(payload, mapping):
    """How many events the mapping raises (the rest are dropped), or None if unknown."""
    if (mapping.get("defaults") or {}).get("action", "drop") != "drop":
        return None
    events = events_of(payload)
    if events is None or not all(isinstance(e, dict) and "event" in e for e in events):
        return None  # envelopes, or records this script does not read
    mapped = mapping.get("events") or {}
    return sum(1 for e in events if e.get("type", "track") == "track" and e["event"] in mapped)


def problems_in(answer):
    if not isinstance(answer, dict):
        return ["the answer is not a JSON object"]
    if "batchItemFailures" in answer:
        failures = answer["batchItemFailures"]
        return [f"batchItemFailures: {json.dumps(failures)}"] if failures else []
    if "statusCode" in answer:
        status = answer["statusCode"]
        return [] if 200 <= int(status) < 300 else [f"HTTP {status}: {answer.get('body')}"]
    failed = answer.get("failed")
    if failed is None:
        return ["the answer has neither batchItemFailures, statusCode nor failed"]
    return [f"failed: {json.dumps(f)}" for f in failed]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("event")
    parser.add_argument("answer")
    parser.add_argument("signals")
    parser.add_argument("--mapping", default="events/mapping.json")
    args = parser.parse_args()
    with open(args.event) as f:
        payload = json.load(f)
    with open(args.answer) as f:
        text = f.read()
    with open(args.signals) as f:
        signals = json.load(f)
    with open(args.mapping) as f:
        mapping = json.load(f)

    try:
        answer = json.loads(text)
    except ValueError:
        print(f"   the function answered:\n{text}")
        print("   ✗ the answer is not JSON")
        return 1
    shown = answer
    if isinstance(answer, dict) and isinstance(answer.get("body"), str):
        try:
            shown = dict(answer, body=json.loads(answer["body"]))
        except ValueError:
            pass
    print("   the function answered:")
    print("\n".join("      " + line for line in json.dumps(shown, indent=2).splitlines()))

    print(f"   Dynamics received {len(signals)} call(s):")
    for s in signals:
        print(f"   {s.get('status')} POST /api/data/v9.2/{s.get('trigger')}  at {s.get('received_at')}")
        print("\n".join("        " + line for line in json.dumps(s.get("body"), indent=2).splitlines()))

    problems = problems_in(answer)
    refused = [s for s in signals if not 200 <= int(s.get("status", 0)) < 300]
    if refused:
        problems.append(f"Dynamics refused {len(refused)} call(s)")
    expected = expected_calls(payload, mapping)
    if expected is not None and len(signals) != expected:
        problems.append(f"expected {expected} call(s) (one per mapped event), Dynamics received {len(signals)}")
    if expected is not None and not problems:
        print(f"   ✓ {expected} mapped event(s) delivered, {len(events_of(payload)) - expected} unmapped dropped")
    for p in problems:
        print(f"   ✗ {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
