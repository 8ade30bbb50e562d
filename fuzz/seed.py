#!/usr/bin/env python3
"""Seeds every fuzz target's corpus (fuzz/corpus/<target>/) from the sample
events (events/), the third-party fixtures (tests/fixtures/), the mapping
documents (config/, events/recipes/) and a few of the tests' own cases.

Inputs with several parts are split on the byte 0xFF (see src/fuzzing.rs).
Each seed is named by the SHA-1 of its bytes, as libFuzzer names its own, so
running this again adds nothing twice. Usage: fuzz/seed.py [CORPUS_DIR]
"""

import base64
import glob
import gzip
import hashlib
import json
import os
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEP = b"\xff"
# The sandbox's webhook secret, which signs the sample events (scripts/sign-events.py).
SECRET = b"sandbox-webhook-secret"


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def files(*patterns):
    out = []
    for pattern in patterns:
        out += sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True))
    return [os.path.relpath(p, ROOT) for p in out]


def jsonish(data):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def dump(value):
    return json.dumps(value, ensure_ascii=False).encode()


MAPPINGS = [p for p in files("config/*.json", "events/*.json", "events/recipes/*.json") if p.endswith("mapping.json")]
PAYLOADS = [p for p in files("events/**/*.json", "tests/fixtures/*.json") if p not in MAPPINGS]
PAYLOAD_BYTES = [read(p) for p in PAYLOADS] + [line for line in read("events/backfill.ndjson").splitlines() if line.strip()]


def http_parts(payload):
    """(headers lines, code, path, raw body, base64?) of an HTTP payload, else None."""
    if not isinstance(payload, dict) or "body" not in payload or not ({"requestContext", "httpMethod", "rawPath"} & payload.keys()):
        return None
    headers = dict(payload.get("headers") or {})
    for name, values in (payload.get("multiValueHeaders") or {}).items():
        headers.setdefault(name, values[0] if values else "")
    lines = "\n".join(f"{k}: {v}" for k, v in headers.items()).encode()
    body = (payload.get("body") or "").encode()
    b64 = bool(payload.get("isBase64Encoded"))
    raw = base64.b64decode(body) if b64 else body
    query = payload.get("queryStringParameters") or {}
    code = (query.get("code") or "").encode()
    path = (payload.get("rawPath") or payload.get("path") or "/").encode()
    return lines, code, path, raw, b64


def events_of(value, depth=0):
    """Every event-like object a payload carries, wrapped and unwrapped."""
    out = []
    if depth > 6:
        return out
    if isinstance(value, list):
        for item in value:
            out += events_of(item, depth + 1)
        return out
    if not isinstance(value, dict):
        return out
    out.append(value)
    for record in value.get("Records") or []:
        if isinstance(record, dict):
            body = record.get("body")
            message = (record.get("Sns") or {}).get("Message")
            for text in (body, message):
                if isinstance(text, str) and jsonish(text) is not None:
                    out += events_of(jsonish(text), depth + 1)
    if isinstance(value.get("Message"), str) and jsonish(value["Message"]) is not None:
        out += events_of(jsonish(value["Message"]), depth + 1)
    if isinstance(value.get("detail"), dict):
        out += events_of(value["detail"], depth + 1)
    if isinstance(value.get("batch"), list):
        out += events_of(value["batch"], depth + 1)
    parts = http_parts(value)
    if parts:
        body = jsonish(parts[3])
        if body is not None:
            out += events_of(body, depth + 1)
    return out


def seeds():
    by_target = {t: [] for t in ["intake", "webhook_body", "sender_schemes", "segment_batch", "envelope", "map_event",
                                 "normalise", "schema_coerce", "row_key", "mapping_document", "secret", "lint"]}
    events = []
    for data in PAYLOAD_BYTES:
        by_target["intake"].append(data)
        payload = jsonish(data)
        if payload is None:
            continue
        events += events_of(payload)
        parts = http_parts(payload)
        if parts:
            lines, code, path, raw, b64 = parts
            for flags in ([b"\x01"] if b64 else [b"\x00"]) + [b"\x02", b"\x05"]:
                by_target["webhook_body"].append(lines + SEP + flags + SEP + raw)
            by_target["sender_schemes"].append(lines + SEP + code + SEP + SECRET + SEP + raw)
            by_target["segment_batch"].append(path + SEP + raw)
    # Bodies already compressed, as a sender would send them; a small bomb (the limit's test).
    segment = read("events/segment-batch.json")
    by_target["webhook_body"] += [
        b"content-encoding: gzip" + SEP + b"\x00" + SEP + gzip.compress(segment),
        b"content-encoding: deflate" + SEP + b"\x08" + SEP + zlib.compress(segment),
        b"content-encoding: gzip" + SEP + b"\x01" + SEP + gzip.compress(b"[" + b" " * 2_000_000 + b"]"),
        b"content-encoding: br" + SEP + b"\x00" + SEP + b"{}",
    ]
    by_target["segment_batch"] += [b"/v1/batch" + SEP + segment, b"/prod/v1/t" + SEP + b'{"event": "E", "writeKey": "wk"}', b"/v1/b" + SEP + b"[]"]
    by_target["sender_schemes"] += [
        b"authorization: Basic d2s6" + SEP + SEP + b"wk" + SEP + b"{}",
        b"x-api-key: k" + SEP + b"k" + SEP + b"k" + SEP + b"{}",
        b"webhook-id: msg_1\nwebhook-timestamp: 1780740000\nwebhook-signature: v1,AAAA v1,BBBB" + SEP + b"msg_1" + SEP + b"whsec_c2VjcmV0" + SEP + b"{}",
        b"x-signature: 00ff" + SEP + SEP + b"s" + SEP + b"{}",
    ]
    seen = set()
    for event in events:
        data = dump(event)
        if data in seen:
            continue
        seen.add(data)
        by_target["envelope"].append(data)
        by_target["map_event"].append(data)
        for name in ("email", "phone"):
            for where in (event.get("traits"), (event.get("context") or {}).get("traits")):
                if isinstance(where, dict) and isinstance(where.get(name), (str, int)):
                    by_target["normalise"].append(b"GB" + SEP + str(where[name]).encode())
        for where in (event.get("properties"), event.get("traits")):
            if isinstance(where, dict):
                scalars = {k: v for k, v in where.items() if isinstance(v, (str, int, float, bool))}
                if scalars:
                    by_target["row_key"].append(dump(dict(list(scalars.items())[:3])))
                for value in scalars.values():
                    by_target["schema_coerce"].append(dump(value))
    # The tests' own cases (src/mapping.rs, src/schema.rs, src/rows/mod.rs).
    for region, raw in [("GB", "07700 900123"), ("", "+44 7700 900123"), ("US", "(415) 555-2671"), ("GB", "12"), ("", "+44 7700 900123 999 999"),
                        ("DE", "0049 30 123456"), ("", "  Jane@Example.COM "), ("", "a@b@c.com"), ("", "jane@.com")]:
        by_target["normalise"].append(region.encode() + SEP + raw.encode())
    for value in ["2026-06-06T10:00:00+0100", "2026-06-06", "1780740000000", "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}", "urn:uuid:3f2504e0-4f89-11d3-9a0c-0305e82c3301",
                  "1e3", " true ", ["a", 1, True, None], {"@odata.type": "Microsoft.Dynamics.CRM.contact"}, 2147483648, -0.5, 1780740000000.0]:
        by_target["schema_coerce"].append(dump(value))
    for key in [{"accountid": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}, {"accountnumber": "A/1"}, {"name": "O'Brien & Sons", "numberofemployees": "12"},
                {"primarycontactid": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "revenue": 1.5, "donotemail": "true"}, {"big": 9.1e18, "createdon": "2026-06-06"}]:
        by_target["row_key"].append(dump(key))
    recipes = {}
    for path in MAPPINGS:
        document = read(path)
        by_target["mapping_document"].append(document)
        event_path = path.replace(".mapping.json", ".json")
        event = read(event_path) if event_path != path and os.path.exists(os.path.join(ROOT, event_path)) else read("events/direct.json")
        recipes[path] = event
        by_target["lint"].append(document + SEP + event)
    by_target["lint"].append(b'{"events": {"E": {"attributes": {"a": "properties."}}}}' + SEP + b'{"event": "E"}')
    secret = {"tenant_id": "00000000-0000-4000-8000-000000000001", "client_id": "c", "client_secret": "s", "org_url_host": "contoso.crm.dynamics.com",
              "trigger_name": "msdynmkt_ordercompleted", "webhook_secret": "whsec_c2VjcmV0", "webhook_key": "k", "write_key": "wk"}
    by_target["secret"] += [dump(secret), dump({**secret, "principals": [{"client_id": "c2", "client_secret": "s2"}]}),
                            dump({"tenant_id": "t", "principals": [{"client_id": "c"}], "org_url_host": "https://x/"}), b"[]", b'{"tenant_id": 1}']
    return by_target


def main():
    corpus = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "fuzz", "corpus")
    for target, items in seeds().items():
        directory = os.path.join(corpus, target)
        os.makedirs(directory, exist_ok=True)
        for data in items:
            name = os.path.join(directory, hashlib.sha1(data).hexdigest())
            if not os.path.exists(name):
                with open(name, "wb") as f:
                    f.write(data)
        print(f"{target}: {len(os.listdir(directory))} inputs in {os.path.relpath(directory, ROOT)}")


if __name__ == "__main__":
    main()
