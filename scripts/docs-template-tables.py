#!/usr/bin/env python3
"""Prints the parameter tables of template.yaml (one per group of its
AWS::CloudFormation::Interface, in its order, with its labels) as Markdown, for
docs/src/reference/template.md. (The outputs table there is written by hand:
not every output has a Description.)

    python3 scripts/docs-template-tables.py [template.yaml]

CloudFormation's short tags (!Ref, !Sub, ...) are read as plain values.
"""
import sys

import yaml


class Loader(yaml.SafeLoader):
    pass


def _any_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


Loader.add_multi_constructor("!", _any_tag)


def cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    with open(path, encoding="utf-8") as f:
        template = yaml.load(f, Loader=Loader)
    parameters = template["Parameters"]
    interface = template.get("Metadata", {}).get("AWS::CloudFormation::Interface", {})
    labels = {name: v["default"] for name, v in interface.get("ParameterLabels", {}).items()}
    groups = [(g["Label"]["default"], g["Parameters"]) for g in interface.get("ParameterGroups", [])]
    grouped = {name for _, names in groups for name in names}
    rest = [name for name in parameters if name not in grouped]
    if rest:
        groups.append(("Not in a group", rest))
    for label, names in groups:
        print(f"### {label}\n")
        print("| parameter | label | default | values | meaning |")
        print("|---|---|---|---|---|")
        for name in names:
            p = parameters[name]
            if "Default" not in p:
                default = "*required*"
            elif str(p["Default"]) == "":
                default = "(empty)"
            else:
                default = f"`{p['Default']}`"
            values = ", ".join(f"`{v}`" for v in p["AllowedValues"]) if "AllowedValues" in p else p.get("Type", "")
            print(f"| `{name}` | {cell(labels.get(name, ''))} | {default} | {values} | {cell(p.get('Description', ''))} |")
        print()


if __name__ == "__main__":
    main()
