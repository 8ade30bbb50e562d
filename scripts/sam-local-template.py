#!/usr/bin/env python3
"""The template `sam local` runs: template.yaml plus what only the sandbox run needs.

template.yaml is the deploy template: `sam deploy --guided` asks every parameter
it has, so it holds none that only `sam local` uses. SAM's local runtime passes
the function only the variables the template declares; this derives a template
that also declares the sandbox's endpoint settings (and an inline D365_MAPPING,
for trying a document without rebuilding the layer) under a `SamLocal`
parameter, empty unless `--env-vars` fills them. The mapping itself still comes
from MappingLayer, /opt/mapping.json: the same file a deployment ships.

usage: scripts/sam-local-template.py [TEMPLATE [OUT]]   (defaults: template.yaml, standard output)
"""
import sys

PARAMETER = """\
  SamLocal:
    Type: String
    Default: "false"
    AllowedValues: ["false", "true"]
    Description: >-
      Derived for sam local (scripts/sam-local-template.py): true declares the sandbox's endpoint settings so
      that sam local can set them; even then they are empty unless sam local's --env-vars fills them.
"""

CONDITION = """\
  # sam local passes the function only the variables the template declares.
  IsSamLocal: !Equals [!Ref SamLocal, "true"]
"""

VARIABLES = """\
          # sam local only (condition IsSamLocal): filled from --env-vars.
          AWS_ENDPOINT_URL_SECRETS_MANAGER: !If [IsSamLocal, "", !Ref AWS::NoValue]
          D365_AUTHORITY_HOST: !If [IsSamLocal, "", !Ref AWS::NoValue]
          D365_DATAVERSE_BASE_URL: !If [IsSamLocal, "", !Ref AWS::NoValue]
          D365_MAPPING: !If [IsSamLocal, "", !Ref AWS::NoValue]
"""

# Each insertion goes after the one line that is exactly this.
ANCHORS = [("Parameters:", PARAMETER), ("Conditions:", CONDITION), ("        Variables:", VARIABLES)]


def derive(text: str) -> str:
    lines = text.splitlines(keepends=True)
    out = []
    seen = {anchor: 0 for anchor, _ in ANCHORS}
    for line in lines:
        out.append(line)
        for anchor, insert in ANCHORS:
            if line.rstrip("\r\n") == anchor:
                seen[anchor] += 1
                out.append(insert)
    for anchor, count in seen.items():
        if count != 1:
            sys.exit(f"sam-local-template: expected one line '{anchor}' in the template, found {count}")
    return "".join(out)


def main() -> None:
    source = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    derived = derive(open(source, encoding="utf-8").read())
    if len(sys.argv) > 2 and sys.argv[2] != "-":
        with open(sys.argv[2], "w", encoding="utf-8") as f:
            f.write(derived)
    else:
        sys.stdout.write(derived)


if __name__ == "__main__":
    main()
