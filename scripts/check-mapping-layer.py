#!/usr/bin/env python3
"""After `sam build`: the layer the function ships holds the mapping document at
the path D365_MAPPING_FILE names (SPEC §21.1), byte for byte config/mapping.json.

A layer without a build method is not copied by `sam build`: the built template
points its ContentUri at the source folder, relative to the build directory, and
`sam deploy` zips that folder (its files land under /opt). This reads the built
template as SAM wrote it and checks what the function would find.

usage: scripts/check-mapping-layer.py [BUILD_DIR [MAPPING]]   (defaults: .aws-sam/build, config/mapping.json)
Exit 0 when the file is there and the same; 1 otherwise, saying what is wrong.
"""
import json
import os
import re
import sys


def resource_block(lines, name):
    """The lines of a top-level resource (indented two spaces under Resources)."""
    start = next((i for i, l in enumerate(lines) if l.rstrip() == f"  {name}:"), None)
    if start is None:
        return []
    block = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= 2:
            break
        block.append(line)
    return block


def value_of(block, key):
    for line in block:
        m = re.match(rf"^\s+{re.escape(key)}:\s*(.+?)\s*$", line)
        if m:
            return m.group(1).strip("'\"")
    return None


def main() -> int:
    build_dir = sys.argv[1] if len(sys.argv) > 1 else ".aws-sam/build"
    source = sys.argv[2] if len(sys.argv) > 2 else "config/mapping.json"
    template = os.path.join(build_dir, "template.yaml")
    try:
        lines = open(template, encoding="utf-8").read().splitlines()
    except OSError as e:
        print(f"check-mapping-layer: cannot read the built template: {e}", file=sys.stderr)
        return 1
    path = value_of(resource_block(lines, "RelayFunction"), "D365_MAPPING_FILE")
    if not path or not path.startswith("/opt/"):
        print(f"check-mapping-layer: {template}: RelayFunction's D365_MAPPING_FILE is {path!r}, not a file under /opt", file=sys.stderr)
        return 1
    layer = resource_block(lines, "MappingLayer")
    content = value_of(layer, "ContentUri")
    if not content:
        print(f"check-mapping-layer: {template}: no MappingLayer with a ContentUri", file=sys.stderr)
        return 1
    if not any(re.search(r"MappingLayer", l) for l in resource_block(lines, "RelayFunction")):
        print(f"check-mapping-layer: {template}: RelayFunction does not list MappingLayer in its Layers", file=sys.stderr)
        return 1
    folder = content if os.path.isabs(content) else os.path.normpath(os.path.join(build_dir, content))
    shipped = os.path.join(folder, path[len("/opt/"):])
    try:
        data = open(shipped, "rb").read()
    except OSError as e:
        print(f"check-mapping-layer: the layer ({folder}) has no {path[len('/opt/'):]}: {e}", file=sys.stderr)
        return 1
    if data != open(source, "rb").read():
        print(f"check-mapping-layer: {shipped} differs from {source}", file=sys.stderr)
        return 1
    try:
        json.loads(data)
    except ValueError as e:
        print(f"check-mapping-layer: {shipped} is not JSON: {e}", file=sys.stderr)
        return 1
    print(f"mapping layer: {shipped} ({len(data)} bytes) lands at {path}, as D365_MAPPING_FILE names it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
