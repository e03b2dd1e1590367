"""What the fixture generators (tests/gen_*.py) share in writing their files:
the --out directory (and input fixture directories) from the command line, a
case directory emptied for a new run, JSON as the fixtures hold it, and
float32 tensors with their generator on record.
"""

import argparse
import json
import os
import shutil

from torch_vit import save_safetensors

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fixture_args(doc, out, **inputs):
    """Parses --out DIR (default tests/fixtures/<out>) and, for each input
    key=sub, --key DIR (default tests/fixtures/<sub>); creates --out. doc: the
    generator's docstring (its first line is the description) or None."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    ap.add_argument("--out", default=os.path.join(FIXTURES, out))
    for key, sub in inputs.items():
        ap.add_argument("--" + key, default=os.path.join(FIXTURES, sub))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    return args


def fresh_dir(path):
    """path as an empty directory (what an earlier run left there removed)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def write_json(path, obj):
    """obj indented by 2, with a final newline."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def save_f32(path, tensors, **metadata):
    """tensors (in their order) as contiguous float32, with metadata (in its
    order, e.g. case=..., generator=...). Returns the float32 tensors."""
    out = type(tensors)((k, v.float().contiguous()) for k, v in tensors.items())
    save_safetensors(path, out, metadata)
    return out


def case_named(cases, name):
    """The case dict of that name."""
    return next(c for c in cases if c["name"] == name)
