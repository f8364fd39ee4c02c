"""Image payload codecs shared by every reader and writer of images (datasets, rosbag2, ROS nodes).

Pure numpy (plus OpenCV for compressed files): converts between the project's image types
(rgb ``[H, W, 3] uint8``, depth ``[H, W] float32`` metres with 0/NaN invalid) and

* ROS ``sensor_msgs/Image`` payloads (``data``, ``width``, ``height``, ``encoding``, ``step``,
  ``is_bigendian``) in the encodings :data:`SUPPORTED_ENCODINGS`;
* image files on disk (PNG/JPEG/PPM/PGM colour images, 16-bit depth PNG/PGM).

Every failure is a typed error that names the encoding or the file, because a corrupt
message or a truncated file in a long recording must be reported and skipped, not crash.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from spatial_memory.errors import ImageDecodeError, UnsupportedEncodingError

# Colour encodings decode to rgb uint8; depth encodings decode to float32 metres.
COLOR_ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS: tuple[str, ...] = ("16UC1", "32FC1")
SUPPORTED_ENCODINGS: tuple[str, ...] = COLOR_ENCODINGS + DEPTH_ENCODINGS

# Bytes per pixel and channel count of each supported encoding.
_LAYOUT: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}

# Largest depth a 16UC1 millimetre image can hold; larger values are written as 0 (invalid)
# rather than saturated, so they are never mistaken for a real 65.535 m reading.
MAX_DEPTH_16UC1_M = 65.535


def _check_encoding(encoding: str) -> tuple[np.dtype, int]:
    try:
        return _LAYOUT[encoding]
    except KeyError:
        raise UnsupportedEncodingError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        ) from None


def is_depth_encoding(encoding: str) -> bool:
    """True for encodings that carry depth (decode to float32 metres)."""
    _check_encoding(encoding)
    return encoding in DEPTH_ENCODINGS


def to_rgb(img: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a colour image in ``encoding`` channel order to rgb.

    Args:
        img: ``[H, W, C] uint8`` (``[H, W]`` or ``[H, W, 1]`` for mono8).
        encoding: one of :data:`COLOR_ENCODINGS`.

    Returns:
        ``[H, W, 3] uint8`` rgb, C-contiguous (a copy when channels had to move).
    """
    _check_encoding(encoding)
    if encoding not in COLOR_ENCODINGS:
        raise UnsupportedEncodingError(f"{encoding!r} is not a colour encoding; colour: {', '.join(COLOR_ENCODINGS)}")
    if encoding == "mono8":
        g = img.reshape(img.shape[0], img.shape[1])
        return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
    if encoding == "rgb8":
        return np.ascontiguousarray(img)
    if encoding == "rgba8":
        return np.ascontiguousarray(img[:, :, :3])
    # bgr8 / bgra8
    return np.ascontiguousarray(img[:, :, 2::-1])


def depth_from_image(raw: np.ndarray, depth_scale: float = 1000.0, invalid_values: tuple[int, ...] = (0,)) -> np.ndarray:
    """Convert a raw depth image to float32 metres with 0 meaning invalid.

    Args:
        raw: ``[H, W]`` integer depth (``depth_scale`` units per metre, e.g. 1000 for mm,
            5000 for TUM) or float depth already in metres (``depth_scale`` ignored).
        invalid_values: raw integer values that mean "no reading" (7-Scenes also uses 65535).

    Returns:
        ``[H, W] float32`` metres; NaN stays NaN for float input (Frame.validate handles it).
    """
    if raw.ndim != 2:
        raise ImageDecodeError(f"depth image must be single-channel HxW, got shape {raw.shape}")
    if np.issubdtype(raw.dtype, np.floating):
        return raw.astype(np.float32, copy=True)
    if not np.issubdtype(raw.dtype, np.integer):
        raise ImageDecodeError(f"depth image has non-numeric dtype {raw.dtype}")
    if depth_scale <= 0 or not np.isfinite(depth_scale):
        raise ValueError(f"depth_scale must be positive and finite, got {depth_scale}")
    depth = raw.astype(np.float32) / np.float32(depth_scale)
    for v in invalid_values:
        depth[raw == v] = 0.0
    return depth


def decode_image(
    data: bytes | bytearray | memoryview | np.ndarray,
    width: int,
    height: int,
    encoding: str,
    step: int,
    is_bigendian: int = 0,
) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` payload.

    Returns:
        colour encodings: ``[H, W, 3] uint8`` rgb; ``16UC1`` (millimetres, 0 invalid) and
        ``32FC1`` (metres): ``[H, W] float32`` metres.

    Raises:
        UnsupportedEncodingError: encoding not in :data:`SUPPORTED_ENCODINGS`.
        ImageDecodeError: empty data, non-positive size, or ``step``/data size inconsistent
            with ``width``/``height``/encoding.
    """
    dtype, channels = _check_encoding(encoding)
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buf.size == 0:
        raise ImageDecodeError(f"{encoding} image {width}x{height}: data is empty")
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"{encoding} image has non-positive size {width}x{height}")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(f"{encoding} image {width}x{height}: step {step} < {row_bytes} bytes per row")
    if buf.size != step * height:
        raise ImageDecodeError(
            f"{encoding} image {width}x{height}: data has {buf.size} bytes, expected step*height = {step * height}"
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    order = ">" if is_bigendian else "<"
    pix = np.ascontiguousarray(rows).view(dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype)
    pix = pix.reshape(height, width, channels)
    if encoding in COLOR_ENCODINGS:
        return to_rgb(pix, encoding)
    plane = pix[:, :, 0].astype(dtype.newbyteorder("="), copy=False)
    return depth_from_image(plane, depth_scale=1000.0)


def encode_image(arr: np.ndarray, encoding: str) -> tuple[bytes, int]:
    """Encode an image as a little-endian ``sensor_msgs/Image`` payload without row padding.

    Args:
        arr: for colour encodings ``[H, W, 3] uint8`` rgb (mono8 also takes ``[H, W] uint8``
            grey; rgb is converted with ITU-R 601 luma); for ``16UC1``/``32FC1`` ``[H, W]``
            float metres (0/NaN/inf/negative = invalid; ``16UC1`` also takes raw ``uint16`` mm).

    Returns:
        ``(data, step)``: the payload bytes and the row length in bytes.

    Raises:
        UnsupportedEncodingError, ImageDecodeError (wrong shape/dtype for the encoding).
    """
    dtype, channels = _check_encoding(encoding)
    arr = np.asarray(arr)
    if encoding in COLOR_ENCODINGS:
        out = _encode_color(arr, encoding)
    elif encoding == "16UC1":
        out = _depth_to_mm16(arr)
    else:
        if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ImageDecodeError(f"32FC1 needs an HxW numeric depth image, got {arr.shape} {arr.dtype}")
        out = arr.astype("<f4")
    out = np.ascontiguousarray(out)
    step = out.shape[1] * channels * dtype.itemsize
    return out.tobytes(), step


def _encode_color(arr: np.ndarray, encoding: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ImageDecodeError(f"{encoding} needs a uint8 image, got {arr.dtype}")
    if encoding == "mono8":
        if arr.ndim == 2:
            return arr
        if arr.ndim == 3 and arr.shape[2] == 3:
            return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)
        raise ImageDecodeError(f"mono8 needs an HxW or HxWx3 image, got {arr.shape}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageDecodeError(f"{encoding} needs an HxWx3 rgb image, got {arr.shape}")
    if encoding == "rgb8":
        return arr
    if encoding == "bgr8":
        return arr[:, :, ::-1]
    alpha = np.full(arr.shape[:2] + (1,), 255, dtype=np.uint8)
    colour = arr if encoding == "rgba8" else arr[:, :, ::-1]
    return np.concatenate([colour, alpha], axis=2)


def _depth_to_mm16(arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 2:
        raise ImageDecodeError(f"16UC1 needs an HxW depth image, got {arr.shape}")
    if arr.dtype == np.uint16:
        return arr.astype("<u2")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageDecodeError(f"16UC1 needs float metres or uint16 millimetres, got {arr.dtype}")
    d = arr.astype(np.float64)
    valid = np.isfinite(d) & (d > 0) & (d <= MAX_DEPTH_16UC1_M)
    mm = np.zeros(d.shape, dtype="<u2")
    mm[valid] = np.rint(d[valid] * 1000.0).astype(np.uint16)
    return mm


# --------------------------------------------------------------------------- files

def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageDecodeError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data:
        raise ImageDecodeError(f"{path}: file is empty")
    return data


def _check_complete(path: Path, data: bytes) -> None:
    """Reject truncated PNG/JPEG files that OpenCV would silently half-decode (JPEG) or not."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-64:]:
            raise ImageDecodeError(f"{path}: truncated PNG (no IEND chunk at the end)")
    elif data[:2] == b"\xff\xd8":
        # In entropy-coded JPEG data 0xFF is always followed by 0x00 or a restart marker, so
        # 0xFFD9 near the end can only be the end-of-image marker (some writers pad after it).
        if b"\xff\xd9" not in data[-64:]:
            raise ImageDecodeError(f"{path}: truncated JPEG (no end-of-image marker)")


def _imdecode(path: Path, flags: int) -> np.ndarray:
    data = _read_bytes(path)
    _check_complete(path, data)
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if img is None or img.size == 0:
        raise ImageDecodeError(f"{path}: not a decodable image (corrupt or unknown format)")
    return img


def read_image_file(path: str | Path) -> np.ndarray:
    """Read a colour image file (PNG, JPEG, PPM, BMP, ...) as rgb.

    Grey images are replicated to 3 channels, alpha is dropped, 16-bit colour is reduced to
    8 bits.

    Returns:
        ``[H, W, 3] uint8``.

    Raises:
        ImageDecodeError: naming the file when it is missing, empty, truncated or corrupt.
    """
    path = Path(path)
    img = _imdecode(path, cv2.IMREAD_UNCHANGED)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageDecodeError(f"{path}: colour image has unsupported sample type {img.dtype}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return to_rgb(img, "mono8")
    if img.ndim == 3 and img.shape[2] == 3:
        return to_rgb(img, "bgr8")
    if img.ndim == 3 and img.shape[2] == 4:
        return to_rgb(img, "bgra8")
    raise ImageDecodeError(f"{path}: colour image has unsupported shape {img.shape}")


def read_depth_png(path: str | Path, scale: float = 1000.0, invalid_values: tuple[int, ...] = (0,)) -> np.ndarray:
    """Read a 16-bit depth image file (PNG or PGM) and convert it to metres.

    Args:
        scale: raw units per metre (1000 for mm, 5000 for TUM).
        invalid_values: raw values meaning "no reading" (0; 7-Scenes also 65535).

    Returns:
        ``[H, W] float32`` metres, 0 invalid.

    Raises:
        ImageDecodeError: naming the file when it is missing, truncated, corrupt, not
            single-channel or not 16-bit (an 8-bit depth image has lost its range).
    """
    path = Path(path)
    raw = _imdecode(path, cv2.IMREAD_UNCHANGED)
    if raw.ndim != 2:
        raise ImageDecodeError(f"{path}: depth image must be single-channel, got shape {raw.shape}")
    if raw.dtype != np.uint16:
        raise ImageDecodeError(f"{path}: depth image must be 16-bit, got {raw.dtype}")
    return depth_from_image(raw, depth_scale=scale, invalid_values=invalid_values)


def write_depth_png(path: str | Path, depth_m: np.ndarray, scale: float = 1000.0) -> Path:
    """Write ``depth_m: [H, W]`` metres as a 16-bit PNG in ``scale`` units per metre (0 = invalid).

    Values that do not fit 16 bits, NaN, inf and negatives are written as 0.
    """
    path = Path(path)
    d = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0) & (d * scale <= 65535.0)
    raw = np.zeros(d.shape, dtype=np.uint16)
    raw[valid] = np.rint(d[valid] * scale).astype(np.uint16)
    if not cv2.imwrite(str(path), raw):
        raise OSError(f"could not write depth PNG {path}")
    return path


def write_image_file(path: str | Path, rgb: np.ndarray) -> Path:
    """Write ``rgb: [H, W, 3] uint8`` to an image file whose format follows the suffix."""
    path = Path(path)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageDecodeError(f"write_image_file needs HxWx3 uint8 rgb, got {rgb.shape} {rgb.dtype}")
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"could not write image {path}")
    return path
