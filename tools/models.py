"""Keras network definitions for tools/train.py (needs TensorFlow; never imported at runtime)."""

from __future__ import annotations

import keras
from keras import layers

from kiosk.labels import AGE_GROUPS

N_AGE = len(AGE_GROUPS)

# Compact variants: (stem channels, [(channels, convs) per stage]); each stage ends with a
# 2x2 max-pool except the last, which ends with global average pooling.
COMPACT_VARIANTS = {
    "s": (16, [(32, 1), (64, 1), (128, 1)]),
    "s4": (16, [(32, 1), (64, 1), (128, 1), (256, 1)]),
    "t": (16, [(32, 1), (64, 1), (96, 2)]),
    "m": (24, [(32, 1), (64, 2), (128, 2)]),
    "l": (32, [(48, 2), (96, 2), (192, 2)]),
}


def conv_bn(x, ch, k=3, s=1, name=None):
    x = layers.Conv2D(ch, k, strides=s, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=0.95)(x)
    return layers.ReLU(max_value=6.0)(x)


def build_compact(
    size: int = 64, variant: str = "m", dropout: float = 0.2, l2: float = 0.0
) -> keras.Model:
    """Plain-conv shared trunk, two softmax heads: age (8) and gender (female, male).

    Input: size x size x 3 RGB pixels 0..255 (float in Keras, uint8 in the int8 model).
    """
    stem, stages = COMPACT_VARIANTS[variant]
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inp)
    x = conv_bn(x, stem, 3, 2)  # size/2
    for i, (ch, n) in enumerate(stages):
        for _ in range(n):
            x = conv_bn(x, ch)
        if i < len(stages) - 1:
            x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    a = layers.Dense(64, activation="relu")(x)
    age = layers.Dense(N_AGE, activation="softmax", name="age")(a)
    g = layers.Dense(32, activation="relu")(x)
    gender = layers.Dense(2, activation="softmax", name="gender")(g)
    return keras.Model(inp, {"age": age, "gender": gender}, name=f"compact_{variant}_{size}")


def build_levi_hassner(size: int = 227) -> keras.Model:
    """The seed's Levi & Hassner (2015) network: conv 96@7x7/4, 256@5x5, 384@3x3, each with
    ReLU and 3x3/2 max-pooling, two FC-512 + ReLU, sigmoid outputs; no LRN, no dropout.

    One trunk with an age (8 sigmoids, normalised to probabilities at evaluation) and a
    gender (1 sigmoid = P(male)) head, so a single training run serves both tasks.
    """
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inp)
    x = layers.Conv2D(96, 7, strides=4, activation="relu")(x)
    x = layers.MaxPooling2D(3, 2)(x)
    x = layers.Conv2D(256, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, 2)(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, 2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dense(512, activation="relu")(x)
    age = layers.Dense(N_AGE, activation="sigmoid", name="age")(x)
    gender = layers.Dense(1, activation="sigmoid", name="gender")(x)
    return keras.Model(inp, {"age": age, "gender": gender}, name="levi_hassner")
