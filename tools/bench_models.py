"""Latency of the shipped int8 models against the levi-hassner float32 TFLite reference.

    python tools/bench_models.py --reference runs/levi-hassner/float [--model accurate] [--json OUT]

Without ``--model`` / ``--model-dir`` every shipped model is timed (kiosk/models/<name>).
Both go through kiosk.classify.Classifier (preprocess + interpreter + decoding) for one face
(a CROP_SIZE square crop, what crop_face returns for a face larger than that) at one thread; the two
are timed in alternating rounds in the same process so that load from other programs on the
machine hits both alike. Also reports interpreter-only time and the model sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kiosk.classify import (  # noqa: E402
    CROP_SIZE,
    SHIPPED_MODELS,
    Classifier,
    preprocess,
    shipped_model_dir,
)


def _time(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench(
    model_dirs: dict[str, str],
    reference: str | None,
    rounds: int = 20,
    per_round: int = 50,
    threads: int = 1,
) -> dict:
    """``model_dirs``: name -> folder, timed with ``reference`` in alternating rounds."""
    crop = np.random.default_rng(0).integers(0, 256, (CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    models = {k: Classifier(d, num_threads=threads) for k, d in model_dirs.items()}
    if reference:
        models["reference"] = Classifier(reference, num_threads=threads)
    full = {k: [] for k in models}
    invoke = {k: [] for k in models}
    for clf in models.values():  # warm-up
        for _ in range(5):
            clf.probabilities([crop])
    for _ in range(rounds):
        for k, clf in models.items():
            n = per_round if k != "reference" else max(2, per_round // 10)
            full[k] += _time(lambda c=clf: c.probabilities([crop]), n)
            x = preprocess(crop, clf.input_size)[None]
            invoke[k] += _time(lambda c=clf, x=x: c._raw(x), n)
    res = {}
    for k, clf in models.items():
        files = {p.name: p.stat().st_size for p in Path(clf.model_dir).glob("*.tflite")}
        res[k] = {
            "model_version": clf.model_version,
            "model_dir": str(clf.model_dir),
            "input_size": clf.input_size,
            "flip_tta": clf.flip_tta,
            "bytes": files,
            "total_bytes": sum(files.values()),
            "ms_median_per_face": round(float(np.median(full[k])) * 1000, 4),
            "ms_p90_per_face": round(float(np.percentile(full[k], 90)) * 1000, 4),
            "ms_median_interpreter_only": round(float(np.median(invoke[k])) * 1000, 4),
            "samples": len(full[k]),
        }
    if "reference" in res:
        res["speedup"] = {
            k: round(res["reference"]["ms_median_per_face"] / res[k]["ms_median_per_face"], 1)
            for k in model_dirs
        }
    res["threads"] = threads
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        action="append",
        choices=SHIPPED_MODELS,
        help="a shipped model (repeatable; default: all of them)",
    )
    which.add_argument("--model-dir", help="a model folder of your own")
    ap.add_argument("--reference", help="folder with the levi-hassner float32 model + labels.json")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    dirs = (
        {"own": args.model_dir}
        if args.model_dir
        else {k: str(shipped_model_dir(k)) for k in (args.model or SHIPPED_MODELS)}
    )
    res = bench(dirs, args.reference, args.rounds, threads=args.threads)
    for k in (*dirs, "reference"):
        if k in res:
            r = res[k]
            print(
                f"{k:9s} {r['model_version']}: {r['ms_median_per_face']:.3f} ms median per face "
                f"(p90 {r['ms_p90_per_face']:.3f}, interpreter only "
                f"{r['ms_median_interpreter_only']:.3f}), {r['total_bytes']} bytes, "
                f"input {r['input_size']}, n={r['samples']}"
            )
    for k, v in res.get("speedup", {}).items():
        print(f"{k}: {v}x faster than the reference at {res['threads']} thread(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
