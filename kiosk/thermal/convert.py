"""Raw radiometric units of each supported camera to degrees Celsius.

Lepton TLinear (PureThermal UVC Y16): kelvin x 100 (or x 10 at 0.1 K resolution).
InfiRay P2 Pro / Topdon TC001: a 256x384 YUYV UVC frame whose bottom 256x192 half holds
little-endian 16-bit temperatures in 1/64 K. MLX90640 drivers already return Celsius.
"""

from __future__ import annotations

import numpy as np

KELVIN = 273.15
P2PRO_WIDTH = 256
P2PRO_HEIGHT = 192


def lepton_to_celsius(raw: np.ndarray, resolution_k: float = 0.01) -> np.ndarray:
    """TLinear counts (uint16) to C; all-zero pixels (no data) stay below absolute zero."""
    return (raw.astype(np.float32) * np.float32(resolution_k) - np.float32(KELVIN)).astype(
        np.float32
    )


def as_uint16_image(data: np.ndarray, height: int, width: int) -> np.ndarray:
    """A Y16 capture as (height, width) uint16, whether OpenCV gave it as words or raw bytes."""
    if data.dtype == np.uint16 and data.size == height * width:
        return data.reshape(height, width)
    flat = np.ascontiguousarray(data).reshape(-1)
    if flat.dtype == np.uint8 and flat.size == 2 * height * width:
        return flat.view("<u2").reshape(height, width)
    raise ValueError(f"expected {height}x{width} 16-bit pixels, got {data.dtype} {data.shape}")


def p2pro_to_celsius(frame: np.ndarray) -> np.ndarray:
    """A full P2 Pro UVC frame (any layout of its 256*384*2 bytes) to the 192x256 C image."""
    words = as_uint16_image(frame, 2 * P2PRO_HEIGHT, P2PRO_WIDTH)
    thermal = words[P2PRO_HEIGHT:]
    return (thermal.astype(np.float32) / np.float32(64.0) - np.float32(KELVIN)).astype(np.float32)


def rotate(image: np.ndarray, quarter_turns_cw: int) -> np.ndarray:
    """Turn an image clockwise by whole quarter turns (a camera mounted on its side)."""
    k = quarter_turns_cw % 4
    return np.ascontiguousarray(np.rot90(image, -k)) if k else image
