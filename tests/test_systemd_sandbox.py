"""Does the daemon's real work survive kiosk.service's MemoryDenyWriteExecute= and
SystemCallFilter=? systemd is not PID 1 here, so tests/sandbox_exec.py applies the same kernel
mechanisms (seccomp as systemd 252 does it, and PR_SET_MDWE) and the results of OpenCV (video
decode, Haar cascade) and LiteRT (XNNPACK, 1 and 2 threads) must equal an unrestricted run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "kiosk.service"
SANDBOX = ROOT / "tests" / "sandbox_exec.py"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="seccomp and prctl are Linux-only"
)

WORKLOAD = r"""
import json, sys
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from kiosk.frames import demo_video_path

cap = cv2.VideoCapture(str(demo_video_path()))
cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
frames, faces = 0, []
while frames < 40:
    ok, img = cap.read()
    if not ok:
        break
    frames += 1
    grey = cv2.cvtColor(cv2.resize(img, None, fx=0.5, fy=0.5), cv2.COLOR_BGR2GRAY)
    faces.append(len(cascade.detectMultiScale(grey, 1.15, 5, minSize=(30, 30))))
cap.release()
outputs = {}
for path in sys.argv[1:]:
    for threads in (1, 2):
        it = Interpreter(model_path=path, num_threads=threads)
        it.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in it.get_input_details():
            info = np.iinfo(d["dtype"]) if np.issubdtype(d["dtype"], np.integer) else None
            x = (rng.integers(info.min, info.max, d["shape"], endpoint=True) if info
                 else rng.random(d["shape"]))
            it.set_tensor(d["index"], x.astype(d["dtype"]))
        it.invoke()
        outputs[f"{Path(path).name}/{threads}"] = [
            it.get_tensor(d["index"]).astype(float).round(5).tolist()
            for d in it.get_output_details()
        ]
print("RESULT " + json.dumps({"frames": frames, "faces": faces, "outputs": outputs}))
"""


def unit_directives(path: Path = UNIT) -> dict[str, list[str]]:
    """Key -> values in order (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def expand_syscall_set(spec: str, seen: set[str] | None = None) -> set[str]:
    """Syscall names in a SystemCallFilter= group, nested groups included."""
    seen = set() if seen is None else seen
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", spec], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            if item not in seen:
                seen.add(item)
                names |= expand_syscall_set(item, seen)
        else:
            names.add(item)
    return names


def unit_syscall_allowlist() -> set[str]:
    """The allow-list that the unit's SystemCallFilter= lines add up to."""
    allowed: set[str] = set()
    for value in unit_directives()["SystemCallFilter"]:
        deny = value.startswith("~")
        specs = value.lstrip("~").split()
        names = set().union(*(expand_syscall_set(s) if s.startswith("@") else {s} for s in specs))
        allowed = allowed - names if deny else allowed | names
    return allowed


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The shipped age/gender models, or (before they exist) a tiny int8 model built here."""
    from kiosk import classify

    shipped = sorted(Path(classify.DEFAULT_MODEL_DIR).glob("*.tflite"))
    if shipped:
        return [str(p) for p in shipped]
    tf = pytest.importorskip("tensorflow", reason="no shipped .tflite model and no TensorFlow")
    import numpy as np

    inp = tf.keras.Input((32, 32, 3))
    x = tf.keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(8, activation="softmax")(x))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: (
        [rng.random((1, 32, 32, 3), dtype=np.float32)] for _ in range(8)
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    path = tmp_path_factory.mktemp("model") / "tiny_int8.tflite"
    path.write_bytes(conv.convert())
    return [str(path)]


@pytest.fixture(scope="module")
def syscall_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (needed to expand SystemCallFilter=)")
    allowed = unit_syscall_allowlist()
    path = tmp_path_factory.mktemp("seccomp") / "allow.txt"
    path.write_text("\n".join(sorted(allowed)) + "\n", encoding="utf-8")
    return path


def child_env() -> dict[str, str]:
    """The checkout first on sys.path, as for pytest itself, installed or not."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def run_workload(models: list[str], *sandbox: str) -> dict:
    cmd = [sys.executable, str(SANDBOX), *sandbox, "--", "-c", WORKLOAD, *models]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=child_env()
    )
    if proc.returncode == 3 and "PR_SET_MDWE unsupported" in proc.stderr:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(scope="module")
def unrestricted(models: list[str]) -> dict:
    result = run_workload(models)
    assert result["frames"] > 0 and sum(result["faces"]) > 0, "the demo workload found no face"
    return result


def test_unit_asks_for_memory_deny_write_execute_and_a_syscall_filter() -> None:
    d = unit_directives()
    assert d["MemoryDenyWriteExecute"] == ["yes"]
    assert d["SystemCallFilter"][0] == "@system-service"
    assert d["SystemCallErrorNumber"] == ["EPERM"]


@pytest.mark.parametrize("mdwe", ["seccomp", "prctl"])
def test_opencv_and_litert_work_under_memory_deny_write_execute(
    models: list[str], unrestricted: dict, mdwe: str
) -> None:
    assert run_workload(models, "--mdwe", mdwe) == unrestricted


def test_opencv_and_litert_work_under_the_unit_syscall_filter(
    models: list[str], unrestricted: dict, syscall_file: Path
) -> None:
    allowed = set(syscall_file.read_text().split())
    assert "mbind" not in allowed and "read" in allowed  # ~@resources applied, basics kept
    both = run_workload(models, "--mdwe", "seccomp", "--syscalls", str(syscall_file))
    assert both == unrestricted


def test_sandbox_really_refuses_writable_executable_memory() -> None:
    code = (
        "import mmap\n"
        "m = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)\n"
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "addr = ctypes.addressof(ctypes.c_char.from_buffer(m))\n"
        "rx = mmap.PROT_READ | mmap.PROT_EXEC\n"
        "rc = libc.mprotect(ctypes.c_void_p(addr), mmap.PAGESIZE, rx)\n"
        "print('mprotect', rc, ctypes.get_errno())\n"
    )
    proc = subprocess.run(
        [sys.executable, str(SANDBOX), "--mdwe", "seccomp", "--", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"mprotect -1 1\b", proc.stdout), proc.stdout  # EPERM


@pytest.mark.parametrize("mdwe", ["seccomp", "prctl"])
def test_kioskd_demo_runs_under_the_unit_sandbox(
    tmp_path: Path, syscall_file: Path, mdwe: str
) -> None:
    """The whole daemon (camera replay, Haar, tracker, LiteRT, SQLite, threads) as the unit
    runs it: MemoryDenyWriteExecute plus the unit's syscall filter."""
    from tests.kioskd import stored_visits, write_config

    cfg = write_config(tmp_path, camera={"source": "demo", "realtime": False})
    cmd = [sys.executable, str(SANDBOX), "--mdwe", mdwe, "--syscalls", str(syscall_file)]
    cmd += ["--", "-m", "kiosk.service", "--config", str(cfg)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=child_env()
    )
    if proc.returncode == 3 and "PR_SET_MDWE unsupported" in proc.stderr:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Operation not permitted" not in proc.stderr, proc.stderr[-3000:]
    assert len(stored_visits(tmp_path)) >= 2, proc.stderr[-3000:]
