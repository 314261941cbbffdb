import os
import subprocess
import sys

import pytest
import yaml

from kiosk.config import EX_CONFIG, Config, ConfigError, load_config, parse_config
from tests.conftest import ROOT, config_key_paths, yaml_key_paths

EXAMPLE = ROOT / "config.example.yaml"


def test_example_config_is_valid_and_documents_every_key():
    cfg = load_config(EXAMPLE)
    assert cfg.camera.source == "demo"
    documented = set(yaml_key_paths(yaml.safe_load(EXAMPLE.read_text())))
    assert documented == set(config_key_paths(Config))


@pytest.mark.parametrize(
    "data, key, reason",
    [
        ({"camera": {"fps": -3}}, "camera.fps", "must be > 0, got -3"),
        ({"camera": {"fsp": 10}}, "camera.fsp", "unknown key"),
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"detector": {"min_neighbors": "five"}}, "detector.min_neighbors", "must be an integer"),
        ({"camera": {"loop": "yes"}}, "camera.loop", "must be true or false"),
        ({"camera": "demo"}, "camera", "must be a mapping"),
        ({"gate": {"mode": "maybe"}}, "gate.mode", "must be one of off, thermal, external"),
        ({"detector": {"roi": [1, 2, 3]}}, "detector.roi", "must have 4 items"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"device_id": "a b"}, "device_id", "ASCII letters"),
        ({"camera": {"fps": float("nan")}}, "camera.fps", "finite"),
        (
            {"classifier": {"model": "fancy"}},
            "classifier.model",
            "must be one of accurate, commercial",
        ),
    ],
)
def test_bad_values_name_the_key(data, key, reason):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == key
    assert reason in str(err.value)
    assert str(err.value).startswith(f"{key}: ")


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="file is empty"):
        load_config(empty)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(binary)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * 2_000_000)
    with pytest.raises(ConfigError, match="too large"):
        load_config(huge)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n')
    with pytest.raises(ConfigError, match="aliases are not allowed"):
        load_config(bomb)
    # Past libyaml's own limit (1000 levels in PyYAML 6.0.4's), so kiosk's guard must speak
    # first whichever PyYAML is installed.
    for open_, close in ("[]", "{}"):
        deep = tmp_path / "deep.yaml"
        deep.write_text(f"camera: {open_ * 2000}{close * 2000}\n")
        with pytest.raises(ConfigError, match="nested deeper than 16 levels"):
            load_config(deep)
    broken = tmp_path / "broken.yaml"
    broken.write_text("camera: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(broken)


def _kioskd(*args):
    return subprocess.run(
        [sys.executable, "-m", "kiosk.service", *args], capture_output=True, text=True, timeout=60
    )


def test_kioskd_exits_78_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera:\n  fps: -3\n")
    r = _kioskd("--check-config", "--config", str(bad))
    assert r.returncode == EX_CONFIG
    assert "camera.fps: must be > 0, got -3" in r.stderr
    r = _kioskd("--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == EX_CONFIG
    assert "nope.yaml: file not found" in r.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("mqtt:\n  hostname: x\n")
    r = _kioskd("--config", str(unknown))
    assert r.returncode == EX_CONFIG and "mqtt.hostname: unknown key" in r.stderr
    r = _kioskd("--check-config", "--config", str(EXAMPLE))
    assert r.returncode == 0, r.stderr


def test_time_zones_work_without_the_os_database(tmp_path):
    """Minimal and container images have no /usr/share/zoneinfo; the tzdata dependency is
    what zoneinfo falls back to (PYTHONTZPATH empty: no system path is searched)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("timezone: Europe/Berlin\n")
    env = {**os.environ, "PYTHONTZPATH": ""}
    r = subprocess.run(
        [sys.executable, "-m", "kiosk.service", "--check-config", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    probe = "import zoneinfo; print(zoneinfo.TZPATH)"
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True).stdout.strip() == "()"  # fmt: skip
