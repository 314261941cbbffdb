import dataclasses
import os
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiosk.store import Store
from kiosk.visit import Check, Visit

# TensorFlow 2.21's oneDNN kernels crash (SIGSEGV) at random in the CC0 age net's backward
# pass; the first test to import TensorFlow fixes the setting for the whole run.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KIOSK_SHARED_DATA", ROOT.parent / "shared" / "data"))

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"real data folder {SHARED_DATA} is absent (it sits beside the repo for developers/CI)",
)


def config_key_paths(cls: type, prefix: str = ""):
    """Every dotted key a config dataclass tree accepts, e.g. ``camera.source``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from config_key_paths(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def yaml_key_paths(data: dict, prefix: str = ""):
    """Every dotted key a parsed YAML mapping holds, to compare with config_key_paths."""
    for k, v in data.items():
        if isinstance(v, dict):
            yield from yaml_key_paths(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


# ---- shared records and a store --------------------------------------------------------------


def new_visit(
    at: datetime | None = None,
    age: str = "25-32",
    gender: str = "female",
    device: str = "kiosk-1",
    *,
    ended: datetime | None = None,
    duration_s: float = 4.0,
    **fields,
) -> Visit:
    """A stored-visit record that starts at `at` (or ends at `ended`; default now, UTC); any
    field can be set."""
    if at is None:
        at = (ended or datetime.now(UTC)) - timedelta(seconds=duration_s if ended else 0)
    values = dict(
        device_id=device,
        started_at=at,
        ended_at=at + timedelta(seconds=duration_s),
        age_group=age,
        age_confidence=0.8,
        gender=gender,
        gender_confidence=0.9,
        temperature_c=36.6,
        temperature_status="pass",
        frames=12,
        model_version="test-1",
    )
    return Visit(**(values | fields))


def new_check(
    at: datetime | None = None,
    status: str = "fail",
    *,
    device: str = "kiosk-1",
    temperature_c: float | None = 38.2,
    **fields,
) -> Check:
    """A failed (or unmeasured) check at `at` (default now, UTC)."""
    return Check(device, at or datetime.now(UTC), status, temperature_c, **fields)


@pytest.fixture
def make_visit():
    return new_visit


@pytest.fixture
def make_check():
    return new_check


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "kiosk.db"


@pytest.fixture
def store(db_path: Path):
    """A fresh SQLite store in a real file, closed after the test."""
    s = Store(f"sqlite:///{db_path}")
    yield s
    s.close()
