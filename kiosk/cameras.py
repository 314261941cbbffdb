"""The cameras on this board, for `kioskd cameras` and `kioskd setup`.

V4L2 capture devices are read from sysfs (name, USB ids) and asked through the V4L2 ioctls
(VIDIOC_QUERYCAP, ENUM_FMT, ENUM_FRAMESIZES, ENUM_FRAMEINTERVALS) for their formats, sizes
and frame rates: the standard library only, so this runs where OpenCV has no V4L2 listing
and no `v4l2-ctl` is installed. Thermal cameras are told apart by USB id and format; an
MLX90640 by an I2C device answering at its address. A test grab runs kioskd's own camera
source and face detector on a few seconds of frames and keeps no image.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

# _IOR/_IOWR('V', nr, struct size) from <linux/videodev2.h>.
VIDIOC_QUERYCAP = 0x80685600  # struct v4l2_capability, 104 bytes
VIDIOC_ENUM_FMT = 0xC0405602  # struct v4l2_fmtdesc, 64 bytes
VIDIOC_ENUM_FRAMESIZES = 0xC02C564A  # struct v4l2_frmsizeenum, 44 bytes
VIDIOC_ENUM_FRAMEINTERVALS = 0xC034564B  # struct v4l2_frmivalenum, 52 bytes
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_CAP_VIDEO_CAPTURE = 0x1
V4L2_CAP_DEVICE_CAPS = 0x80000000
V4L2_FRMSIZE_TYPE_DISCRETE = 1
V4L2_FRMIVAL_TYPE_DISCRETE = 1
I2C_SLAVE = 0x0703
MLX90640_ADDRESS = 0x33
# USB ids of the thermal cameras kiosk reads (docs/deploy.md's udev rules use the same).
THERMAL_USB_IDS = {("1e4e", "0100"): "lepton", ("0bda", "5830"): "p2pro"}
# Sizes that give a camera away when its USB id is unknown (a PureThermal clone, a TC001).
THERMAL_SIZES = {(160, 120): "lepton", (160, 122): "lepton", (256, 384): "p2pro"}


@dataclass(frozen=True, slots=True)
class Format:
    fourcc: str  # "YUYV", "MJPG", "Y16 "
    description: str
    sizes: tuple[tuple[int, int, float | None], ...]  # width, height, highest fps (None: unknown)


@dataclass(frozen=True, slots=True)
class Camera:
    device: str  # /dev/videoN
    name: str  # the driver's card name
    stable_path: str | None  # /dev/v4l/by-id/... (survives renumbering), if udev made one
    bus: str  # "usb-0000:01:00.0-1.2": stable per port
    usb_id: tuple[str, str] | None
    formats: tuple[Format, ...]
    thermal: str | None  # lepton | p2pro | None
    problem: str = ""  # why the formats could not be read

    @property
    def source(self) -> str:
        """What camera.source should say for it."""
        return self.stable_path or self.device


@dataclass(frozen=True, slots=True)
class I2cThermal:
    bus: str  # /dev/i2c-N
    address: int = MLX90640_ADDRESS


@dataclass(slots=True)
class Grab:
    """What a few seconds of a source look like to kioskd's detector."""

    source: str
    live: bool = True  # a camera or stream; False: a file, read as fast as it decodes
    frames: int = 0
    seconds: float = 0.0
    size: tuple[int, int] | None = None
    frames_with_face: int = 0
    face_widths_px: list[int] = field(default_factory=list)
    problem: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _ioctl(fd: int, request: int, buf: bytearray) -> bool:
    """One V4L2 ioctl on `buf`; False at the end of an enumeration (EINVAL)."""
    try:
        fcntl.ioctl(fd, request, buf)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    return True


def query_capture(fd: int) -> tuple[str, str, bool]:
    """(card name, bus info, is a video capture node) from VIDIOC_QUERYCAP."""
    buf = bytearray(104)
    fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
    _driver, card, bus, _version, caps, device_caps = struct.unpack_from("16s32s32sIII", buf)
    effective = device_caps if caps & V4L2_CAP_DEVICE_CAPS else caps
    return _cstr(card), _cstr(bus), bool(effective & V4L2_CAP_VIDEO_CAPTURE)


def enum_formats(fd: int) -> list[Format]:
    formats = []
    for index in range(64):
        buf = bytearray(64)
        struct.pack_into("II", buf, 0, index, V4L2_BUF_TYPE_VIDEO_CAPTURE)
        if not _ioctl(fd, VIDIOC_ENUM_FMT, buf):
            break
        _i, _t, _flags, desc, pixfmt = struct.unpack_from("III32sI", buf)
        fourcc = pixfmt.to_bytes(4, "little").decode("ascii", "replace")
        formats.append(Format(fourcc, _cstr(desc), tuple(enum_sizes(fd, pixfmt))))
    return formats


def enum_sizes(fd: int, pixfmt: int) -> list[tuple[int, int, float | None]]:
    """Discrete sizes with their highest frame rate; a stepwise range as its largest size."""
    sizes = []
    for index in range(256):
        buf = bytearray(44)
        struct.pack_into("II", buf, 0, index, pixfmt)
        if not _ioctl(fd, VIDIOC_ENUM_FRAMESIZES, buf):
            break
        kind = struct.unpack_from("I", buf, 8)[0]
        if kind == V4L2_FRMSIZE_TYPE_DISCRETE:
            w, h = struct.unpack_from("II", buf, 12)
        else:  # stepwise/continuous: min_w, max_w, step_w, min_h, max_h, step_h
            _lo_w, w, _sw, _lo_h, h, _sh = struct.unpack_from("6I", buf, 12)
        sizes.append((w, h, max_fps(fd, pixfmt, w, h)))
        if kind != V4L2_FRMSIZE_TYPE_DISCRETE:
            break
    return sizes


def max_fps(fd: int, pixfmt: int, width: int, height: int) -> float | None:
    best = None
    for index in range(64):
        buf = bytearray(52)
        struct.pack_into("IIII", buf, 0, index, pixfmt, width, height)
        if not _ioctl(fd, VIDIOC_ENUM_FRAMEINTERVALS, buf):
            break
        kind, num, den = struct.unpack_from("III", buf, 16)
        if num:
            best = max(best or 0.0, den / num)
        if kind != V4L2_FRMIVAL_TYPE_DISCRETE:
            break
    return best


def _usb_id(sys_device: Path) -> tuple[str, str] | None:
    """idVendor/idProduct of the USB device above a video4linux node, if it is one."""
    for parent in (sys_device, *sys_device.parents):
        vendor, product = parent / "idVendor", parent / "idProduct"
        if vendor.is_file() and product.is_file():
            return vendor.read_text().strip(), product.read_text().strip()
        if parent.name == "devices":
            break
    return None


def _stable_paths(dev_root: Path) -> dict[str, str]:
    """/dev/videoN -> its /dev/v4l/by-id (else by-path) name; index0 links only."""
    found: dict[str, str] = {}
    for kind in ("by-path", "by-id"):  # by-id last: it wins
        for link in sorted((dev_root / "v4l" / kind).glob("*")):
            if link.is_symlink() and not link.name.endswith(tuple(f"index{i}" for i in "123")):
                found[str(dev_root / os.path.basename(os.readlink(link)))] = str(link)
    return found


def thermal_kind(usb_id: tuple[str, str] | None, formats: tuple[Format, ...]) -> str | None:
    if usb_id in THERMAL_USB_IDS:
        return THERMAL_USB_IDS[usb_id]
    for f in formats:
        for w, h, _fps in f.sizes:
            if (w, h) in THERMAL_SIZES:
                return THERMAL_SIZES[(w, h)]
    return None


def _node_number(name: str) -> int:
    return int(re.sub(r"\D", "", name) or 0)


def list_cameras(sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev")) -> list[Camera]:
    """Every V4L2 video capture node, in device order (metadata nodes left out)."""
    cameras = []
    stable = _stable_paths(dev_root)
    nodes = (sys_root / "class" / "video4linux").glob("video*")
    for node in sorted(nodes, key=lambda p: _node_number(p.name)):
        device = str(dev_root / node.name)
        name = (node / "name").read_text().strip() if (node / "name").is_file() else node.name
        formats: tuple[Format, ...] = ()
        bus, problem, capture = "", "", True
        try:
            fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            problem = f"cannot open: {exc.strerror}"
        else:
            try:
                name, bus, capture = query_capture(fd)
                formats = tuple(enum_formats(fd)) if capture else ()
            except OSError as exc:
                problem = f"not a V4L2 device: {exc.strerror}"
            finally:
                os.close(fd)
        if not capture:
            continue  # a UVC camera's second node carries metadata, not frames
        usb = _usb_id(node.joinpath("device").resolve()) if (node / "device").exists() else None
        cameras.append(
            Camera(device, name, stable.get(device), bus, usb, formats, thermal_kind(usb, formats),
                   problem)
        )  # fmt: skip
    return cameras


def find_i2c_thermal(dev_root: Path = Path("/dev")) -> list[I2cThermal]:
    """I2C buses where a device acknowledges MLX90640's address (0x33). Writing the address
    of a register (0x2407, the chip's id) is the probe; nothing is changed on the device."""
    found = []
    for bus in sorted(dev_root.glob("i2c-*"), key=lambda p: _node_number(p.name)):
        try:
            fd = os.open(bus, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.ioctl(fd, I2C_SLAVE, MLX90640_ADDRESS)
            os.write(fd, b"\x24\x07")
            found.append(I2cThermal(str(bus)))
        except OSError:
            pass  # no answer at 0x33 (or not an I2C adapter)
        finally:
            os.close(fd)
    return found


def grab_faces(
    source: str, width: int = 640, height: int = 480, fps: float = 15.0, seconds: float = 3.0,
    min_size_px: int = 60,
) -> Grab:  # fmt: skip
    """Run kioskd's camera source and detector on `seconds` of `source` (a file: as fast as it
    decodes). Frames stay in memory; nothing is written."""
    from kiosk.config import DetectorConfig
    from kiosk.detect import FaceDetector
    from kiosk.frames import CameraSource

    grab = Grab(source)
    detector = FaceDetector.from_config(DetectorConfig(min_size_px=min_size_px))
    camera = CameraSource(source, width, height, fps, realtime=False)
    grab.live = camera.live
    try:
        camera.start()
    except OSError as exc:
        grab.problem = str(exc)
        return grab
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds and not camera.ended:
            frame = camera.read(timeout=0.5)
            if frame is None:
                continue
            grab.frames += 1
            grab.size = (frame.image.shape[1], frame.image.shape[0])
            faces = detector.detect(frame.image)
            if faces:
                grab.frames_with_face += 1
                grab.face_widths_px.append(faces[0].w)
    finally:
        grab.seconds = time.monotonic() - t0
        camera.close()
    if not grab.frames:
        grab.problem = grab.problem or f"no frame in {seconds:.0f} s"
    return grab
