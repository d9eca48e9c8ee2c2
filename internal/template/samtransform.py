#!/usr/bin/env python3
"""Print what CloudFormation will deploy from a SAM template: the template after the
AWS::Serverless-2016-10-31 transform, as JSON on stdout.

    python3 internal/template/samtransform.py template.yaml [mutation.yaml]
    python3 internal/template/samtransform.py --batch template.yaml [mutation.yaml ...]

With --batch it prints one JSON object: "" maps to the template as it is, and each mutation
file's name to the template it makes (the translator is loaded once).

It runs the SAM translator (the samtranslator package cfn-lint brings) as cfn-lint does, with
local CodeUris replaced by a placeholder S3 URI. A mutation file, used by the least-privilege
test's fixtures, changes the template before the transform:

    Merge:            # deep-merged into Resources
      RemediateFunction:
        Properties:
          FunctionUrlConfig: {AuthType: NONE}
    AppendPolicies:   # appended to a function's Policies
      SlackActionFunction:
        - KMSDecryptPolicy: {KeyId: "*"}
    AddResources:     # added to Resources
      Open: {Type: AWS::Lambda::Permission, Properties: {...}}

Exit status 1 with the translator's errors on stderr when the transform fails.
"""

import json
import logging
import sys

from cfnlint.decode import cfn_yaml
from cfnlint.template.transforms._sam import Transform


def merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v


def mutate(tpl, path):
    m = cfn_yaml.load(path) or {}
    resources = tpl.setdefault("Resources", {})
    merge(resources, m.get("Merge", {}))
    for fn, policies in m.get("AppendPolicies", {}).items():
        resources[fn]["Properties"].setdefault("Policies", []).extend(policies)
    resources.update(m.get("AddResources", {}))


def transform(path, mutation):
    tpl = cfn_yaml.load(path)
    if mutation:
        mutate(tpl, mutation)
    t = Transform(path, tpl, "us-east-1")
    errors = t.transform_template()
    if errors:
        raise ValueError("; ".join(e.message for e in errors))
    return t.template()


def main(argv):
    logging.disable(logging.CRITICAL)
    batch = len(argv) > 1 and argv[1] == "--batch"
    if batch:
        argv = argv[1:]
    if len(argv) < 2 or (not batch and len(argv) > 3):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if batch:
            out = {"": transform(argv[1], None)}
            for m in argv[2:]:
                out[m] = transform(argv[1], m)
        else:
            out = transform(argv[1], argv[2] if len(argv) == 3 else None)
    except ValueError as e:
        print(f"SAM transform failed: {e}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, indent=1, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
