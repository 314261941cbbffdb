"""Write constraints.txt: every package that `pip install '.[test,chart,metrics]'` and
tools/requirements-train.txt resolve to, pinned, so that CI, README's commands and
deploy/install.sh install the same versions on any day.

    python3 tools/refresh_constraints.py            # resolve afresh from the index, rewrite
    python3 tools/refresh_constraints.py --check    # does the file still pin everything?

pip's own resolver does the work (``pip install --dry-run --ignore-installed --report``), so
nothing is installed. ``--check`` resolves again *through* the file: any package it does not
pin, or pins inconsistently, changes the result and fails the check. Run it on the Python
the project targets (3.11, x86-64); the pins hold for aarch64 too, which has wheels of each.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
REQUIREMENTS = [".[test,chart,metrics]", "-r", "tools/requirements-train.txt"]
HEADER = """\
# Every version that `pip install '.[test,chart,metrics]' -r tools/requirements-train.txt`
# resolved to on {python} ({machine}). Installs use it with `-c constraints.txt`.
# Refresh: python3 tools/refresh_constraints.py (see docs/deploy.md, "Versions").
"""


def resolve(constraints: Path | None) -> dict[str, str]:
    """{name: version} of everything pip would install here, the project itself left out."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        cmd += ["--quiet", "--disable-pip-version-check", "--report", str(report)]
        cmd += ["-c", str(constraints)] if constraints else []
        subprocess.run([*cmd, *REQUIREMENTS], cwd=ROOT, check=True)
        items = json.loads(report.read_text())["install"]
    project = _project_name()
    pins = {_canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
    pins.pop(project, None)
    return dict(sorted(pins.items()))


def _canonical(name: str) -> str:
    """PEP 503's normal form: `tensorflow_cpu` and `TensorFlow-CPU` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _project_name() -> str:
    import tomllib

    return _canonical(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"])


def render(pins: dict[str, str]) -> str:
    python = f"Python {platform.python_version()}"
    head = HEADER.format(python=python, machine=platform.machine())
    return head + "".join(f"{name}=={version}\n" for name, version in pins.items())


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_canonical(name)] = version
    return pins


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="resolve through the file; no write")
    ap.add_argument("--file", type=Path, default=CONSTRAINTS)
    args = ap.parse_args(argv)
    if args.check:
        want, got = read_pins(args.file), resolve(args.file)
        changed = sorted(n for n in want.keys() | got.keys() if want.get(n) != got.get(n))
        for name in changed:
            print(f"{name}: file {want.get(name, '-')}, resolved {got.get(name, '-')}")
        print(f"{args.file.name}: {'out of date' if changed else 'complete'} ({len(got)} pins)")
        return 1 if changed else 0
    args.file.write_text(render(resolve(None)))
    print(f"wrote {args.file} ({len(read_pins(args.file))} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
