"""Pip constraints that pin every direct dependency of pyproject.toml to its declared floor (lowest-versions job).

    python scripts/lowest_constraints.py --skip torch torchvision > lowest.txt   # `name==floor`, one a line
    pip install -c lowest.txt -e .
    python scripts/lowest_constraints.py --check --skip torch torchvision      # installed == floor, or exit 1

Every dependency must declare a `>=` floor: one without a floor is an error here, since "lowest" would then mean
whatever the resolver likes. Skipped names (torch, torchvision: the pinned build installed first) are left to pip.
"""
from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the CI runs 3.11, where tomllib is in the standard library
    sys.exit("lowest_constraints.py needs Python 3.11+ (tomllib)")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")
FLOOR = re.compile(r">=\s*([0-9][0-9A-Za-z.+!-]*)")


def canonical(name: str) -> str:
    """PEP 503 name (open_clip_torch == open-clip-torch), so skips and installed lookups match."""
    return re.sub(r"[-_.]+", "-", name).lower()


def floors(pyproject: Path = PYPROJECT, skip: set[str] = frozenset()) -> dict[str, str]:
    """{dependency name as declared: floor version} for `[project] dependencies`, minus `skip`."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out: dict[str, str] = {}
    for dep in deps:
        m = REQ.match(dep)
        if not m:
            raise ValueError(f"{pyproject}: cannot parse dependency {dep!r}")
        name, spec = m.group(1), m.group(3)
        if canonical(name) in skip:
            continue
        floor = FLOOR.search(spec)
        if not floor:
            raise ValueError(f"{pyproject}: dependency {dep!r} has no '>=' floor; declare one (e.g. '{name}>=X.Y')")
        out[name] = floor.group(1)
    return out


def check(wanted: dict[str, str]) -> list[str]:
    """Lines 'name: installed X, floor Y' for every dependency not installed at exactly its floor."""
    from packaging.version import Version  # ships with pip's environment in every venv we build

    bad = []
    for name, floor in wanted.items():
        try:
            got = metadata.version(name)
        except metadata.PackageNotFoundError:
            bad.append(f"{name}: not installed, floor {floor}")
            continue
        if Version(got) != Version(floor):
            bad.append(f"{name}: installed {got}, floor {floor}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", nargs="*", default=[], help="dependency names to leave out (e.g. torch torchvision)")
    ap.add_argument("--check", action="store_true", help="verify the installed versions equal the floors")
    ap.add_argument("--pyproject", type=Path, default=PYPROJECT)
    args = ap.parse_args(argv)
    wanted = floors(args.pyproject, {canonical(s) for s in args.skip})
    if not args.check:
        print("\n".join(f"{name}=={floor}" for name, floor in wanted.items()))
        return 0
    bad = check(wanted)
    for line in bad:
        print("not at floor:", line, file=sys.stderr)
    if not bad:
        print("lowest versions:", ", ".join(f"{n}=={metadata.version(n)}" for n in wanted))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
