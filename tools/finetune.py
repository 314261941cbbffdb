"""The ``cc0`` recipe of tools/train.py: fine-tune the public-domain dlib nets, distilled.

The CC0 age and gender nets (tools/onnx_keras.py) were trained on ~110k and ~200k faces,
far more varied than UTKFace; a network trained from scratch on UTKFace alone overfits
that collection. Here they are the starting point and, frozen, the teacher: each epoch the
teacher labels the same augmented images, and the student learns from
``(1 - distill) x the ground truth + distill x the teacher``, which keeps what the teacher
knows about faces from other collections while the student adapts to Haar-framed crops
and to the training labels. ``--epochs 0`` converts the CC0 nets unchanged.

Gender calibration uses portraits from another collection (``--calibrate-folds``), never
the training images, so the bias it removes is the one seen outside the training data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from kiosk.labels import AGE_GROUP_MIDPOINTS, AGE_GROUPS
from tools.evaluate import RACES, compute_metrics, per_group_metrics
from tools.facedata import FaceRows, detect_face_crops, load_chips, read_labels
from tools.onnx_keras import CC0_AGES

N_AGE = len(AGE_GROUPS)


def parse_folds(spec: str | None) -> list[int]:
    """'0-5' or '6,7' -> fold numbers."""
    if not spec:
        return []
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def year_targets(age: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian over the CC0 net's 81 year bins around each exact age (nan -> uniform)."""
    a = np.clip(np.nan_to_num(age, nan=40.0), 0, CC0_AGES[-1])[:, None]
    t = np.exp(-((CC0_AGES[None, :] - a) ** 2) / (2 * sigma**2))
    return (t / t.sum(axis=1, keepdims=True)).astype(np.float32)


def _metrics(rows: FaceRows, out: dict) -> dict:
    age = np.asarray(out["age"], np.float64)
    age = age / np.maximum(age.sum(axis=1, keepdims=True), 1e-9)
    return compute_metrics(
        rows, age, np.asarray(out["gender"], np.float64)[:, 0], np.asarray(AGE_GROUP_MIDPOINTS)
    )


def train_cc0(args, argv: list[str]) -> int:
    import keras
    import tensorflow as tf

    from tools.onnx_keras import build_cc0
    from tools.train import (
        calibrate_gender,
        classify_chips,
        convert,
        fmt,
        make_batch,
        make_epoch,
        sample_weights,
        summary,
        write_model_dir,
        write_outputs,
    )

    t_start = time.time()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, args.threads))
    keras.utils.set_random_seed(args.seed)
    size = 64
    name = args.name or "cc0"
    work = Path(args.work_dir or Path("runs") / name)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    rows = read_labels(args.labels)
    usable = (rows.gender >= 0) & (rows.age_nearest >= 0)
    val_idx = np.flatnonzero(usable & (rows.fold == args.val_fold))
    train_idx = (
        np.flatnonzero(usable & (rows.fold != args.val_fold))
        if args.epochs
        else np.zeros(0, np.int64)
    )
    if args.limit and args.limit < len(train_idx):
        train_idx = np.sort(rng.choice(train_idx, args.limit, replace=False))
    chips = load_chips(args.images, rows.files, size, args.cache_dir)

    if not args.portraits:
        raise SystemExit("--arch cc0 needs --portraits (gender calibration off the training set)")
    prow = read_labels(args.portraits)
    pcrops, found = detect_face_crops(args.portrait_images, prow.files, size, args.cache_dir)

    def in_folds(spec: str | None) -> np.ndarray:
        return np.flatnonzero(found & np.isin(prow.fold, parse_folds(spec)))

    cal_idx, ptest_idx = in_folds(args.calibrate_folds), in_folds(args.portrait_test_folds)
    ptrain_idx = in_folds(args.portrait_train_folds)
    if set(cal_idx) & set(ptest_idx) or set(ptrain_idx) & (set(cal_idx) | set(ptest_idx)):
        raise SystemExit("portrait folds for training, calibration and testing must not overlap")
    print(
        f"[data] UTKFace train {len(train_idx)}, fold {args.val_fold} {len(val_idx)}; "
        f"portraits with a Haar face {int(found.sum())}/{len(prow)}: train {len(ptrain_idx)}, "
        f"calibration {len(cal_idx)}, test {len(ptest_idx)}",
        flush=True,
    )

    # Training set: UTKFace chips (age + gender) and portrait crops (gender only).
    x_all = np.concatenate([chips[train_idx], pcrops[ptrain_idx]])
    tr = rows.subset(train_idx)
    age_years = np.concatenate([tr.age, np.full(len(ptrain_idx), np.nan)])
    gender = np.concatenate([tr.gender, prow.gender[ptrain_idx]])
    w_age, w_gen = sample_weights(tr, args.balance) if len(train_idx) else (np.zeros(0),) * 2
    w_age = np.concatenate([w_age, np.zeros(len(ptrain_idx))]).astype(np.float32)
    w_gen = np.concatenate([w_gen, np.ones(len(ptrain_idx))]).astype(np.float32)
    y_years = year_targets(age_years, args.age_sigma_years)
    y_gender = (
        np.eye(2, dtype=np.float32)[gender] * (1 - args.label_smoothing) + args.label_smoothing / 2
    )

    model = build_cc0(size, trunk_gender=args.trunk_gender)
    history = []
    train_minutes = 0.0
    if args.eval_only:  # recalibrate and re-evaluate the trained model in --work-dir
        model = keras.models.load_model(work / "model.keras")
        done = json.loads((work / "metrics.json").read_text())
        history, train_minutes = done["history"], done["train_minutes"]
    elif args.epochs:
        teacher = build_cc0(size)
        teacher.trainable = False
        n = len(x_all)
        steps = int(np.ceil(n / args.batch)) * args.epochs
        sched = keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.05)
        model.compile(
            optimizer=keras.optimizers.AdamW(sched, weight_decay=args.weight_decay),
            loss={
                "age_years": keras.losses.CategoricalCrossentropy(),
                "gender": keras.losses.CategoricalCrossentropy(),
            },
        )
        prog_idx = val_idx
        if args.val_limit and args.val_limit < len(val_idx):
            prog_idx = np.sort(
                np.random.default_rng(0).choice(val_idx, args.val_limit, replace=False)
            )
        val_x = make_batch(chips, prog_idx, size, 0, 0.0)
        pt_x = make_batch(pcrops, ptest_idx, size, 0, 0.0)
        lam = args.distill
        print(
            f"[model] cc0: {model.count_params()} parameters, {args.epochs} epochs x {n} "
            f"images, distill {lam}",
            flush=True,
        )
        for ep in range(args.epochs):
            te = time.time()
            x = make_epoch(x_all, np.arange(n), size, args.seed * 1000 + ep, args.augment)
            t = teacher.predict(x, batch_size=256, verbose=0)
            yy = (1 - lam) * y_years + lam * t["age_years"]
            yg = (1 - lam) * y_gender + lam * t["gender"]
            perm = rng.permutation(n)
            h = model.fit(
                x[perm],
                {"age_years": yy[perm], "gender": yg[perm]},
                sample_weight={"age_years": w_age[perm], "gender": w_gen[perm]},
                batch_size=args.batch,
                epochs=1,
                verbose=0,
                shuffle=False,
            )
            vm = _metrics(rows.subset(prog_idx), model.predict(val_x, batch_size=256, verbose=0))
            pm = _metrics(prow.subset(ptest_idx), model.predict(pt_x, batch_size=256, verbose=0))
            loss = float(h.history["loss"][-1])
            history.append(
                {
                    "epoch": ep + 1,
                    "loss": round(loss, 4),
                    **summary(vm),
                    "portraits_gender": round(pm["gender_accuracy"], 4),
                }
            )
            print(
                f"[epoch {ep + 1:2d}/{args.epochs}] loss {loss:.4f}  val {fmt(vm)}  portraits "
                f"{100 * pm['gender_accuracy']:.1f}% (f {100 * pm['gender_accuracy_female']:.1f}"
                f" / m {100 * pm['gender_accuracy_male']:.1f})  {time.time() - te:.0f}s "
                f"(total {(time.time() - t_start) / 60:.1f} min)",
                flush=True,
            )
        model.save(work / "model.keras")
        train_minutes = (time.time() - t_start) / 60

    export = keras.Model(
        model.input, {"age": model.output["age"], "gender": model.output["gender"]}
    )
    rep_pool = (x_all, np.arange(len(x_all))) if args.epochs else (pcrops, cal_idx)
    rep_idx = rng.choice(rep_pool[1], min(args.rep_samples, len(rep_pool[1])), replace=False)
    rep = make_batch(rep_pool[0], rep_idx, size, 7, 0.5 * args.augment)
    kinds = {"float32": work / "float", "int8": work / "int8"}
    write_model_dir(
        kinds["float32"],
        convert(export, None),
        name + "-f32",
        AGE_GROUP_MIDPOINTS,
        size,
        args.flip_tta,
    )
    write_model_dir(
        kinds["int8"], convert(export, rep), name, AGE_GROUP_MIDPOINTS, size, args.flip_tta
    )

    results: dict = {}
    for kind, d in kinds.items():
        b = calibrate_gender(d, pcrops, cal_idx, prow.gender[cal_idx])
        print(
            f"[{kind:7s}] gender logit bias {b:+.3f} (from {len(cal_idx)} portraits, folds "
            f"{args.calibrate_folds})",
            flush=True,
        )
        results[kind] = {}
        sets = {
            f"fold{args.val_fold}": (rows.subset(val_idx), chips[val_idx]),
            "portraits": (prow.subset(ptest_idx), pcrops[ptest_idx]),
        }
        for set_name, (sub, x) in sets.items():
            a, f, yrs = classify_chips(d, x, 1)
            m = compute_metrics(sub, a, f, yrs)
            entry = summary(m)
            if set_name.startswith("fold"):
                entry["age_confusion"] = m["age_confusion"]
                entry["by_race"] = per_group_metrics(sub, a, f, yrs, sub.race, RACES)
            results[kind][set_name] = entry
            print(f"[{kind:7s}] {set_name:>12}: {fmt(m)}", flush=True)

    report = {
        "name": name,
        "arch": "cc0",
        "input_size": size,
        "trunk_gender": args.trunk_gender,
        "parameters": int(model.count_params()),
        "train_rows": int(len(x_all)),
        "train_rows_utkface": int(len(train_idx)),
        "train_rows_portraits": int(len(ptrain_idx)),
        "calibration_portraits": int(len(cal_idx)),
        "val_fold": args.val_fold,
        "train_minutes": round(train_minutes, 1),
        "total_minutes": round(train_minutes + (time.time() - t_start) / 60, 1)
        if args.eval_only
        else round((time.time() - t_start) / 60, 1),
        "model_bytes": {k: (d / "model.tflite").stat().st_size for k, d in kinds.items()},
        "settings": dict(vars(args)),
        "metrics": results,
        "history": history,
    }
    write_outputs(argv, report, work, args.out, kinds["int8"])
    return 0
