"""Age-group and gender inference with small int8 LiteRT/TFLite models.

The runtime uses numpy, OpenCV and a TFLite interpreter only (``ai_edge_litert``, or
``tflite_runtime`` on older images); TensorFlow is never imported here.

* :func:`crop_face` turns a Haar box into a crop framed like the training chips.
* :func:`preprocess` is the one preprocessing function: ``tools/train.py`` feeds the
  training images through it too, so training and inference see the same tensors.
* :class:`Classifier` loads the model files (one file with an age and a gender output,
  or two files ``age.tflite`` and ``gender.tflite``) and predicts for a batch of crops.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kiosk.config import ClassifierConfig
from kiosk.labels import AGE_GROUP_MIDPOINTS, AGE_GROUPS, GENDERS, MODEL_NAMES

MODELS_ROOT = Path(__file__).resolve().parent / "models"
#: The shipped models, each in its own folder under kiosk/models/ (``classifier.model``):
#: ``accurate`` is the most accurate one (its training data is for non-commercial research
#: only); ``commercial`` is one whose weights and every training input allow commercial
#: use. kiosk/models/MODEL_CARD.md has both.
SHIPPED_MODELS = MODEL_NAMES
DEFAULT_MODEL = MODEL_NAMES[0]
DEFAULT_MODEL_DIR = MODELS_ROOT / DEFAULT_MODEL
LABELS_FILE = "labels.json"
#: The training chips are aligned UTKFace crops. Measured with kiosk.detect.FaceDetector's
#: defaults on 600 chips given context (chips at 160 px, 80 px of replicated border), the Haar
#: box is ~1.04 chip widths wide (median; 1.05 for the 128 px, 1.02 for the 64 px subset) and
#: the chip centre lies ~0.085 chip widths below the box centre. The faces README's 0.84 and
#: 0.055 come from detecting on the bare chips, where Haar can only return boxes that fit
#: inside the chip (40 % of chips had no detection at all), so they understate the box.
HAAR_BOX_FRACTION = 1.04
HAAR_CENTRE_OFFSET = 0.085
#: crop_face returns at most this many pixels a side: twice the shipped models' 64 px input,
#: so that preprocess's INTER_AREA shrink takes OpenCV's integer-ratio path (10 us a face
#: here, against 100 us for a non-integer ratio; same box filter).
CROP_SIZE = 128
#: Input side of the shipped models; the model file's own input shape wins.
DEFAULT_INPUT_SIZE = 64


class ModelFileError(ValueError):
    """A model file is present but is not what the classifier expects."""


def shipped_model_dir(name: str) -> Path:
    """The folder of a shipped model by name (``classifier.model``)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(SHIPPED_MODELS)}")
    return MODELS_ROOT / name


def crop_face(frame_bgr: np.ndarray, box, size: int = CROP_SIZE) -> np.ndarray:
    """The square crop around a Haar box framed like the training chips.

    ``box`` has ``x, y, w, h`` in frame pixels (``kiosk.detect.Box``). Parts of the crop
    outside the frame are filled by repeating the frame's edge pixels. The result is
    resized down (INTER_AREA) to at most ``size`` pixels a side; small crops are left as
    they are (``preprocess`` resizes them to the model input).
    """
    if frame_bgr is None or frame_bgr.ndim not in (2, 3) or frame_bgr.size == 0:
        raise ValueError("crop_face needs a non-empty 2-D (grey) or 3-D (BGR) image")
    if box.w <= 0 or box.h <= 0:
        raise ValueError(f"crop_face needs a box with positive size, got {box}")
    side = max(box.w, box.h) / HAAR_BOX_FRACTION
    cx = box.x + box.w / 2.0
    cy = box.y + box.h / 2.0 + HAAR_CENTRE_OFFSET * side
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    s = max(1, int(round(side)))
    x1, y1 = x0 + s, y0 + s
    fh, fw = frame_bgr.shape[:2]
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x1 - fw), max(0, y1 - fh)
    crop = frame_bgr[max(0, y0) : min(fh, y1), max(0, x0) : min(fw, x1)]
    if crop.size == 0:
        raise ValueError(f"box {box} lies outside the {fw}x{fh} frame")
    if pad_l or pad_t or pad_r or pad_b:
        crop = cv2.copyMakeBorder(crop, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    if s > size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def preprocess(crop_bgr: np.ndarray, size: int = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """A BGR (or grey) face crop of any size -> the model input: ``size x size x 3`` RGB uint8.

    Shrinking uses INTER_AREA, enlarging INTER_LINEAR. Pixel scaling to the network's
    range happens inside the model, so the tensor here is plain 0..255 pixels.
    """
    img = np.asarray(crop_bgr)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"preprocess needs a non-empty BGR image, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass
class Prediction:
    """Age and gender for one face."""

    age_probs: np.ndarray  # probabilities over AGE_GROUPS, sums to 1
    age_group: str
    age_years: float  # expected age in years
    gender: str  # "female" | "male"
    gender_prob: float  # probability of `gender`
    female_prob: float = field(default=0.5)


def _make_interpreter(path: Path, num_threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # older Pi images ship only tflite-runtime
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "no TFLite interpreter: install ai-edge-litert (or tflite-runtime)"
            ) from exc
    data = path.read_bytes()
    if len(data) < 16 or data[4:8] != b"TFL3":
        raise ModelFileError(
            f"{path}: not a TFLite flatbuffer (expected the 'TFL3' identifier, "
            f"got {len(data)} bytes starting {data[:8]!r}); the file is truncated or corrupt"
        )
    try:
        interp = Interpreter(model_content=data, num_threads=num_threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(
            f"{path}: cannot load the TFLite model ({exc}); the file is truncated or corrupt"
        ) from exc
    return interp, data


class _Model:
    """One TFLite model file, its input quantization and its output tensors."""

    def __init__(self, path: Path, num_threads: int):
        self.path = path
        self.interp, self.data = _make_interpreter(path, num_threads)
        inputs = self.interp.get_input_details()
        if len(inputs) != 1:
            raise ModelFileError(f"{path}: expected 1 input tensor, found {len(inputs)}")
        self.input = inputs[0]
        shape = tuple(int(d) for d in self.input["shape"])
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or shape[1] < 16:
            raise ModelFileError(
                f"{path}: expected an input of shape (1, S, S, 3) (a square RGB image), got {shape}"
            )
        self.size = shape[1]
        self.outputs = self.interp.get_output_details()
        self._batch = shape[0]

    def output_by_width(self, width: int) -> dict | None:
        for out in self.outputs:
            if len(out["shape"]) == 2 and int(out["shape"][-1]) == width:
                return out
        return None

    def run(self, batch: np.ndarray) -> dict[int, np.ndarray]:
        """batch: (N, S, S, 3) uint8 RGB; returns float outputs keyed by tensor index."""
        n = batch.shape[0]
        if n != self._batch:
            self.interp.resize_tensor_input(self.input["index"], [n, self.size, self.size, 3])
            self.interp.allocate_tensors()
            self._batch = n
        self.interp.set_tensor(self.input["index"], self._quantize(batch))
        self.interp.invoke()
        result = {}
        for out in self.outputs:
            y = self.interp.get_tensor(out["index"])
            s, z = out["quantization"]
            y = (y.astype(np.float32) - z) * s if s else y.astype(np.float32)
            result[out["index"]] = y
        return result

    def _quantize(self, batch: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        scale, zero = self.input["quantization"]
        if dtype == np.uint8 and scale == 1.0 and zero == 0:  # the shipped models: raw pixels
            return np.ascontiguousarray(batch, dtype=np.uint8)
        x = batch.astype(np.float32)
        if dtype == np.float32:
            return x
        if scale:
            x = x / scale + zero
        info = np.iinfo(dtype)
        return np.clip(np.round(x), info.min, info.max).astype(dtype)


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 0.0, None)
    total = p.sum(axis=-1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / p.shape[-1])


class Classifier:
    """Age group and gender for face crops, from the int8 TFLite models in ``model_dir``.

    ``model_dir`` holds ``labels.json`` and either one model with an 8-wide age output and
    a 1- or 2-wide gender output, or two models (``age.tflite``, ``gender.tflite``).
    """

    @classmethod
    def from_config(cls, c: ClassifierConfig) -> Classifier:
        """The shipped model named by `classifier.model`, or the folder `model_dir`."""
        return cls(c.model_dir or shipped_model_dir(c.model), c.num_threads)

    def __init__(
        self,
        model_dir: str | Path | None = None,
        num_threads: int = 1,
        flip_tta: bool | None = None,
    ):
        self.model_dir = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
        labels_path = self.model_dir / LABELS_FILE
        if not labels_path.is_file():
            raise FileNotFoundError(
                f"{labels_path}: label map missing (expected a JSON file naming the model "
                f"files, the 8 age groups and the 2 genders)"
            )
        try:
            meta = json.loads(labels_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{labels_path}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise ModelFileError(f"{labels_path}: expected a JSON object")
        if tuple(meta.get("age_groups", ())) != AGE_GROUPS:
            raise ModelFileError(f"{labels_path}: expected age_groups {list(AGE_GROUPS)}")
        if tuple(meta.get("genders", ())) != GENDERS:
            raise ModelFileError(f"{labels_path}: expected genders {list(GENDERS)}")
        years = meta.get("age_years", list(AGE_GROUP_MIDPOINTS))
        if len(years) != len(AGE_GROUPS):
            raise ModelFileError(f"{labels_path}: expected 8 values in age_years")
        self.age_years = np.asarray(years, dtype=np.float64)
        self.flip_tta = bool(meta.get("flip_tta", False)) if flip_tta is None else flip_tta
        # Added to the gender logit (log odds of female): set at training time so that women
        # and men are recognised equally often on the training images.
        self.gender_logit_bias = float(meta.get("gender_logit_bias", 0.0))
        # Multiplies the age probabilities (then renormalised): undoes the class weights used
        # in training so that the output follows the training set's age distribution.
        prior = meta.get("age_prior", [1.0] * len(AGE_GROUPS))
        if len(prior) != len(AGE_GROUPS) or min(prior) <= 0:
            raise ModelFileError(f"{labels_path}: expected 8 positive values in age_prior")
        self.age_prior = np.asarray(prior, dtype=np.float64)
        self.num_threads = num_threads

        files = meta.get("files") or {}
        digest = hashlib.sha256()
        # The version covers the calibration in labels.json as well as the model bytes.
        digest.update(labels_path.read_bytes())
        if "model" in files:
            path = self._model_path(files["model"], "one model with an age and a gender output")
            m = _Model(path, num_threads)
            self._age_model = self._gender_model = m
            digest.update(m.data)
        elif "age" in files and "gender" in files:
            self._age_model = _Model(self._model_path(files["age"], "the age model"), num_threads)
            self._gender_model = _Model(
                self._model_path(files["gender"], "the gender model"), num_threads
            )
            digest.update(self._age_model.data)
            digest.update(self._gender_model.data)
        else:
            raise ModelFileError(
                f"{labels_path}: expected 'files' with 'model' or with 'age' and 'gender'"
            )
        age_out = self._age_model.output_by_width(len(AGE_GROUPS))
        if age_out is None:
            raise ModelFileError(
                f"{self._age_model.path}: expected an age output of shape (N, 8), got "
                f"{[tuple(int(d) for d in o['shape']) for o in self._age_model.outputs]}"
            )
        gender_out = self._gender_model.output_by_width(2) or self._gender_model.output_by_width(1)
        if gender_out is None or gender_out is age_out:
            raise ModelFileError(
                f"{self._gender_model.path}: expected a gender output of shape (N, 2) or "
                f"(N, 1), got "
                f"{[tuple(int(d) for d in o['shape']) for o in self._gender_model.outputs]}"
            )
        self._age_out: dict = age_out
        self._gender_out: dict = gender_out
        self.input_size = self._age_model.size
        if self._gender_model.size != self.input_size:
            raise ModelFileError(
                f"{self._gender_model.path}: input size {self._gender_model.size} differs from "
                f"{self._age_model.path}'s {self.input_size}"
            )
        self.model_version = f"{meta.get('name', 'model')}-{digest.hexdigest()[:8]}"

    def _model_path(self, name: str, what: str) -> Path:
        path = self.model_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file missing (expected {what}, .tflite)")
        return path

    def _raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._age_model.run(batch)
        age = out[self._age_out["index"]]
        if self._gender_model is not self._age_model:
            out = self._gender_model.run(batch)
        g = out[self._gender_out["index"]]
        female = _normalise(g)[:, 0] if g.shape[1] == 2 else 1.0 - g[:, 0]  # 1 wide: P(male)
        female = np.clip(female, 0.0, 1.0)
        if self.gender_logit_bias:
            p = np.clip(female, 1e-4, 1 - 1e-4)
            female = 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + self.gender_logit_bias)))
        return _normalise(age * self.age_prior), female

    def probabilities(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(age probabilities (N, 8), female probability (N,)) for BGR crops of any size."""
        if len(crops) == 0:
            return np.zeros((0, len(AGE_GROUPS))), np.zeros((0,))
        batch = np.stack([preprocess(c, self.input_size) for c in crops])
        age, female = self._raw(batch)
        if self.flip_tta:
            age_f, female_f = self._raw(np.ascontiguousarray(batch[:, :, ::-1]))
            age, female = (age + age_f) / 2.0, (female + female_f) / 2.0
        return age, female

    def predict(self, crops: list[np.ndarray]) -> list[Prediction]:
        age, female = self.probabilities(crops)
        preds = []
        for a, f in zip(age, female, strict=True):
            i = int(np.argmax(a))
            f = float(f)
            is_female = f >= 0.5
            preds.append(
                Prediction(
                    age_probs=a.astype(np.float32),
                    age_group=AGE_GROUPS[i],
                    age_years=float(np.dot(a, self.age_years)),
                    gender=GENDERS[0] if is_female else GENDERS[1],
                    gender_prob=f if is_female else 1.0 - f,
                    female_prob=f,
                )
            )
        return preds
