"""deploy/install.sh --prefix <tmp> --no-systemctl: the layout, a second run changing nothing,
the config check, and uninstall keeping the data unless --purge."""

from __future__ import annotations

import hashlib
import os
import shutil
import site
import stat
import subprocess
import sys
import sysconfig
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiosk.config import DEVICE_ID, load_config
from kiosk.setup import system_timezone
from kiosk.store import Store
from tests.conftest import new_visit

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the files install.sh uses, so edits in the working tree during the test
    cannot change what it installs, and the script is run from somewhere else."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("deploy", "kiosk", "docs"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "config.example.yaml", "README.md", "constraints.txt"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    return src


def run(*args: str, src: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess[str]:
    script = src / "deploy" / "install.sh"
    proc = subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, timeout=600, cwd="/"
    )
    if check:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr}"
    return proc


def install(
    src: Path, prefix: Path, *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    # Offline: the dependencies this test process already has are all the venv gets.
    args = ["--prefix", str(prefix), "--no-systemctl", "--python", sys.executable]
    return run(*args, "--system-site-packages", "--offline", *extra, src=src, check=check)


def prepare_venv(prefix: Path) -> None:
    """When pytest itself runs in a virtual environment, --system-site-packages would see the
    base interpreter only: pre-create the venv (install.sh reuses a working one) and point it
    at this environment's site-packages too."""
    if sys.prefix == sys.base_prefix:
        return
    venv = prefix / "opt" / "kiosk"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    paths = {*site.getsitepackages(), sysconfig.get_path("purelib")}
    Path(purelib, "kiosk-test-parent-env.pth").write_text("\n".join(sorted(paths)) + "\n")


def snapshot(prefix: Path) -> dict[str, str]:
    """Every installed path outside the venv's library tree, with a digest of its content."""
    out: dict[str, str] = {}
    lib = prefix / "opt" / "kiosk" / "lib"
    for path in sorted(prefix.rglob("*")):
        if lib in path.parents or path.is_dir():
            continue
        if path.is_symlink():
            out[str(path.relative_to(prefix))] = "-> " + os.readlink(path)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(prefix))] = f"{oct(path.stat().st_mode)} {digest}"
    return out


def test_usage_errors() -> None:
    assert run("--help").stdout.startswith("usage:")
    bad = run("--bogus", check=False)
    assert bad.returncode != 0 and "unknown option: --bogus" in bad.stderr
    purge = run("--purge", "--prefix", "/nonexistent-kiosk-prefix", check=False)
    assert purge.returncode != 0 and "--purge only goes with --uninstall" in purge.stderr


def test_install_twice_then_uninstall_then_purge(tmp_path: Path, checkout: Path) -> None:
    prefix = tmp_path / "root"
    prefix.mkdir()
    prepare_venv(prefix)
    first = install(checkout, prefix)
    assert "config ok" in first.stdout

    opt, etc = prefix / "opt" / "kiosk", prefix / "etc" / "kiosk"
    units = prefix / "etc" / "systemd" / "system"
    for tool in ("kioskd", "kiosk-report"):
        assert os.access(opt / "bin" / tool, os.X_OK), tool
    version = subprocess.run(
        [str(opt / "bin" / "kioskd"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("kioskd ")
    # kioskd setup wrote it for this door, not a copy of the example (device id demo-kiosk).
    cfg = load_config(etc / "config.yaml")
    assert "written by `kioskd setup`" in (etc / "config.yaml").read_text()
    assert DEVICE_ID.fullmatch(cfg.device_id) and cfg.device_id != "demo-kiosk"
    assert cfg.timezone == (system_timezone() or "UTC") and cfg.camera.source != "demo"
    for name in ("mqtt_password", "smtp_password"):
        cred = etc / name
        assert cred.read_bytes() == b"" and stat.S_IMODE(cred.stat().st_mode) == 0o600
    _check_report_wrapper(prefix, cfg.device_id)

    unit_src = checkout / "deploy" / "systemd"
    repo_units = sorted(p.name for p in unit_src.iterdir() if p.suffix in (".service", ".timer"))
    assert sorted(p.name for p in units.glob("kiosk*")) == repo_units
    service = (units / "kiosk.service").read_text()
    assert f"ExecStart={opt}/bin/kioskd --config {etc}/config.yaml" in service
    assert f"LoadCredential=mqtt_password:{etc}/mqtt_password" in service
    assert (units / "systemd-time-wait-sync.service.d" / "kiosk-bounded-wait.conf").is_file()
    assert (prefix / "etc" / "sysusers.d" / "kiosk.conf").is_file()
    if shutil.which("systemd-sysusers"):
        passwd = (prefix / "etc" / "passwd").read_text()
        assert any(line.startswith("kiosk:") for line in passwd.splitlines())
        group = (prefix / "etc" / "group").read_text().splitlines()
        assert any(g.startswith("video:") and "kiosk" in g.split(":")[3] for g in group)
    if shutil.which("systemctl"):
        wants = units / "multi-user.target.wants" / "kiosk.service"
        assert os.readlink(wants) == "/etc/systemd/system/kiosk.service"
        if (units / "kiosk-report.timer").exists():
            assert (units / "timers.target.wants" / "kiosk-report.timer").is_symlink()
    if shutil.which("systemd-analyze"):  # the installed units point at real executables
        names = [str(units / n) for n in repo_units]
        verify = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True
        )
        assert verify.returncode == 0, verify.stderr

    # A second run with the user's own config in place changes nothing.
    with (etc / "config.yaml").open("a") as f:
        f.write("# edited on site\n")
    before = snapshot(prefix)
    second = install(checkout, prefix)
    assert "kept the existing" in second.stdout
    assert snapshot(prefix) == before
    assert (etc / "config.yaml").read_text().endswith("# edited on site\n")

    # An upgrade that the existing config does not pass stops with EX_CONFIG, config untouched.
    (etc / "config.yaml").write_text("camera:\n  fsp: 15\n")
    bad = install(checkout, prefix, check=False)
    assert bad.returncode == 78, bad.stdout + bad.stderr
    assert "camera.fsp" in bad.stderr
    assert (etc / "config.yaml").read_text() == "camera:\n  fsp: 15\n"

    # Uninstall keeps config and data ...
    state = prefix / "var" / "lib" / "kiosk"
    state.mkdir(parents=True)
    (state / "kiosk.db").write_bytes(b"visits")
    run("--prefix", str(prefix), "--no-systemctl", "--uninstall", src=checkout)
    assert not opt.exists() and not (prefix / "usr" / "local" / "bin" / "kiosk-report").exists()
    assert not list(units.glob("kiosk*")) and not list(units.rglob("*.wants/kiosk*"))
    assert not (units / "systemd-time-wait-sync.service.d").exists()
    assert (state / "kiosk.db").read_bytes() == b"visits"
    assert (etc / "config.yaml").exists() and cred.exists()

    # ... unless asked.
    run("--prefix", str(prefix), "--no-systemctl", "--uninstall", "--purge", src=checkout)
    assert not state.exists() and not etc.exists()


def _check_report_wrapper(prefix: Path, device_id: str) -> None:
    """kiosk-report on PATH reads the installed config and the service's state directory."""
    wrapper = prefix / "usr" / "local" / "bin" / "kiosk-report"
    state = prefix / "var" / "lib" / "kiosk"
    store = Store(f"sqlite:///{state / 'kiosk.db'}")
    at = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    store.add_visit(new_visit(at, "38-43", "male", device_id))
    store.close()
    r = subprocess.run(
        [str(wrapper), "export", "--from", "2026-03-04", "--to", "2026-03-04", "--tz", "UTC"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"{device_id},2026-03-04T12:00:00Z" in r.stdout
    assert subprocess.run([str(wrapper), "--help"], capture_output=True).returncode == 0
    shutil.rmtree(state)  # the rest of the test starts without a database


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean() -> None:
    scripts = ["deploy/install.sh", "tools/arm64_check.sh", ".ci/run", ".ci/fresh-clone"]
    proc = subprocess.run(
        ["shellcheck", *(str(ROOT / s) for s in scripts)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
