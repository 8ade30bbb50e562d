#!/usr/bin/env python3
"""Re-signs the sample webhook events (signatures are valid for 5 minutes).

usage: scripts/sign-events.py [--secret SECRET] [FILE ...]
Defaults: the sandbox's webhook secret and events/apigw-rest.json,
events/apigw-http.json, events/function-url.json, events/alb.json.
Standard library only.
"""
import argparse, base64, hashlib, hmac, json, time

DEFAULT_FILES = ["events/apigw-rest.json", "events/apigw-http.json", "events/function-url.json", "events/alb.json"]

def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()

def resign(path: str, secret: bytes) -> None:
    with open(path) as f:
        event = json.load(f)
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    timestamp = str(int(time.time() * 1000))
    signature = sign(secret, timestamp, raw)
    for name in list(event.get("headers") or {}):
        if name.lower() == "x-timestamp":
            event["headers"][name] = timestamp
        elif name.lower() == "x-signature":
            event["headers"][name] = signature
    for name in list(event.get("multiValueHeaders") or {}):
        if name.lower() == "x-timestamp":
            event["multiValueHeaders"][name] = [timestamp]
        elif name.lower() == "x-signature":
            event["multiValueHeaders"][name] = [signature]
    with open(path, "w") as f:
        json.dump(event, f, indent=2)
        f.write("\n")
    print(f"signed {path} (X-Timestamp {timestamp})")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", default="sandbox-webhook-secret")
    parser.add_argument("files", nargs="*", default=DEFAULT_FILES)
    args = parser.parse_args()
    for path in args.files:
        resign(path, args.secret.encode())
