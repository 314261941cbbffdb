"""constraints.txt pins every package the project's installs resolve to, and the refresh tool
that writes it agrees: resolving through the file gives the file back (needs the index)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from tests.conftest import ROOT
from tools.refresh_constraints import CONSTRAINTS, read_pins, render

# The one extra left out: its Blinka stack resolves only on the boards it drives.
UNPINNED_EXTRAS = {"mlx90640"}


def _name(requirement: str) -> str:
    name = re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra not in UNPINNED_EXTRAS:
            reqs += items
    train = (ROOT / "tools" / "requirements-train.txt").read_text().splitlines()
    reqs += [line for line in train if line.strip() and not line.startswith("#")]
    return {_name(r) for r in reqs}


def test_every_requirement_is_pinned_exactly() -> None:
    lines = [ln for ln in CONSTRAINTS.read_text().splitlines() if ln and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.+!-]*", ln) for ln in lines)
    pinned = set(read_pins(CONSTRAINTS))
    assert _requirements() - pinned == set()
    assert render(read_pins(CONSTRAINTS)).splitlines()[3:] == lines  # the tool's own format


def test_resolving_through_the_file_gives_the_file_back() -> None:
    """What `python3 tools/refresh_constraints.py --check` does: pip's resolver, run with the
    file as constraints, must choose exactly the pinned set (a missing pin would float)."""
    r = subprocess.run(
        [sys.executable, "tools/refresh_constraints.py", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "constraints.txt: complete" in r.stdout
