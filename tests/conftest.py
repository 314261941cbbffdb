import dataclasses
import os
import typing
from pathlib import Path

import pytest

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


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA
