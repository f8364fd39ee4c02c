"""sim.image_codec: sensor_msgs/Image payloads in every supported encoding, and image files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sim.image_codec import (
    SUPPORTED_ENCODINGS,
    decode_image,
    depth_from_image,
    encode_image,
    read_depth_png,
    read_image_file,
    to_rgb,
    write_depth_png,
    write_image_file,
)
from spatial_memory.errors import ImageDecodeError, UnsupportedEncodingError

H, W = 6, 9


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def depth() -> np.ndarray:
    d = np.random.default_rng(2).uniform(0.3, 8.0, (H, W)).astype(np.float32)
    d[0, 0] = 0.0
    return d


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_round_trip_is_exact(rgb, encoding):
    data, step = encode_image(rgb, encoding)
    channels = 4 if encoding.endswith("a8") else 3
    assert step == W * channels and len(data) == step * H
    out = decode_image(data, W, H, encoding, step)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


def test_channel_order_on_the_wire(rgb):
    bgr, _ = encode_image(rgb, "bgr8")
    assert bytes(bgr[:3]) == bytes(rgb[0, 0, ::-1])
    rgba, _ = encode_image(rgb, "rgba8")
    assert bytes(rgba[:4]) == bytes(rgb[0, 0]) + b"\xff"
    # decoding a bgr8 payload as if it were rgb8 must swap red and blue
    swapped = decode_image(bgr, W, H, "rgb8", W * 3)
    np.testing.assert_array_equal(swapped, rgb[:, :, ::-1])


def test_mono8(rgb):
    grey = rgb[:, :, 1].copy()
    data, step = encode_image(grey, "mono8")
    out = decode_image(data, W, H, "mono8", step)
    assert out.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)
    # rgb input is converted to luma
    data, _ = encode_image(rgb, "mono8")
    luma = np.frombuffer(data, np.uint8).reshape(H, W)
    np.testing.assert_array_equal(luma, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_32fc1_exact_and_big_endian(depth):
    data, step = encode_image(depth, "32FC1")
    assert step == W * 4
    out = decode_image(data, W, H, "32FC1", step)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, depth)
    big = depth.astype(">f4").tobytes()
    np.testing.assert_array_equal(decode_image(big, W, H, "32FC1", W * 4, is_bigendian=1), depth)


def test_16uc1_millimetres(depth):
    d = depth.copy()
    d[1, 1], d[1, 2], d[1, 3], d[1, 4] = np.nan, -1.0, np.inf, 70.0  # all invalid in 16-bit mm
    data, step = encode_image(d, "16UC1")
    assert step == W * 2
    raw = np.frombuffer(data, "<u2").reshape(H, W)
    assert raw[0, 0] == 0 and raw[1, 1:5].tolist() == [0, 0, 0, 0]
    out = decode_image(data, W, H, "16UC1", step)
    assert out.dtype == np.float32
    ok = np.isfinite(d) & (d > 0) & (d < 65)
    assert np.abs(out[ok] - d[ok]).max() <= 0.0005 + 1e-6
    assert (out[~ok] == 0).all()
    big = raw.astype(">u2").tobytes()
    np.testing.assert_array_equal(decode_image(big, W, H, "16UC1", W * 2, is_bigendian=1), out)


def test_padded_rows(rgb):
    step = W * 3 + 5
    buf = np.zeros((H, step), np.uint8)
    buf[:, : W * 3] = rgb.reshape(H, -1)
    np.testing.assert_array_equal(decode_image(buf.tobytes(), W, H, "rgb8", step), rgb)


def test_decode_accepts_numpy_payload(rgb):
    data, step = encode_image(rgb, "rgb8")
    np.testing.assert_array_equal(decode_image(np.frombuffer(data, np.uint8), W, H, "rgb8", step), rgb)


def test_unsupported_encoding_names_it_and_the_supported_list(rgb):
    with pytest.raises(UnsupportedEncodingError) as e:
        decode_image(b"\x00" * 12, 2, 2, "yuv422", 4)
    assert "yuv422" in str(e.value) and all(enc in str(e.value) for enc in SUPPORTED_ENCODINGS)
    with pytest.raises(UnsupportedEncodingError, match="bayer_rggb8"):
        encode_image(rgb, "bayer_rggb8")


def test_payload_errors(rgb):
    data, step = encode_image(rgb, "rgb8")
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"", W, H, "rgb8", step)
    with pytest.raises(ImageDecodeError, match="step"):
        decode_image(data, W, H, "rgb8", step - 1)
    with pytest.raises(ImageDecodeError, match="expected step\\*height"):
        decode_image(data[:-3], W, H, "rgb8", step)
    with pytest.raises(ImageDecodeError, match="non-positive"):
        decode_image(data, 0, H, "rgb8", step)
    with pytest.raises(ImageDecodeError):
        encode_image(rgb.astype(np.float32), "rgb8")
    with pytest.raises(ImageDecodeError):
        encode_image(rgb, "16UC1")


def test_to_rgb_and_depth_from_image():
    bgra = np.array([[[1, 2, 3, 4]]], np.uint8)
    assert to_rgb(bgra, "bgra8").tolist() == [[[3, 2, 1]]]
    raw = np.array([[0, 1000, 65535]], np.uint16)
    assert depth_from_image(raw, 1000.0, invalid_values=(0, 65535)).tolist() == [[0.0, 1.0, 0.0]]
    assert depth_from_image(raw, 5000.0).tolist()[0][1] == pytest.approx(0.2)


# ------------------------------------------------------------------------------ files

def test_png_files_round_trip(tmp_path, rgb, depth):
    p = write_image_file(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(read_image_file(p), rgb)
    q = write_depth_png(tmp_path / "d.png", depth, scale=5000.0)
    out = read_depth_png(q, scale=5000.0)
    assert out.dtype == np.float32 and out[0, 0] == 0
    assert np.abs(out - depth).max() <= 0.5 / 5000 + 1e-6


def test_real_jpeg_and_grey_images(shared_data, tmp_path):
    img = read_image_file(shared_data / "icl_nuim_livingroom_micro/image/00000.jpg")
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8 and img.std() > 10
    grey = tmp_path / "g.png"
    cv2.imwrite(str(grey), img[:, :, 0])
    g = read_image_file(grey)
    assert g.shape == (480, 640, 3) and (g[:, :, 0] == g[:, :, 2]).all()


def _truncate(src, dst, keep: float):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_files_are_rejected_with_their_name(shared_data, tmp_path, keep):
    jpg = _truncate(shared_data / "icl_nuim_livingroom_micro/image/00000.jpg", tmp_path / "cut.jpg", keep)
    png = _truncate(shared_data / "icl_nuim_livingroom_micro/depth/00000.png", tmp_path / "cut.png", keep)
    with pytest.raises(ImageDecodeError, match="cut.jpg.*truncated JPEG"):
        read_image_file(jpg)
    with pytest.raises(ImageDecodeError, match="cut.png.*truncated PNG"):
        read_depth_png(png)


def test_corrupt_missing_empty_and_wrong_kind(shared_data, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all" * 20)
    with pytest.raises(ImageDecodeError, match="bad.png"):
        read_image_file(bad)
    with pytest.raises(ImageDecodeError, match="nope.png.*not found"):
        read_depth_png(tmp_path / "nope.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.jpg.*empty"):
        read_image_file(tmp_path / "empty.jpg")
    # a colour image is not a depth image, and 8-bit depth has lost its range
    with pytest.raises(ImageDecodeError, match="single-channel"):
        read_depth_png(shared_data / "open3d_rgbd_samples/other_formats/TUM_color.png")
    cv2.imwrite(str(tmp_path / "d8.png"), np.full((4, 4), 7, np.uint8))
    with pytest.raises(ImageDecodeError, match="16-bit"):
        read_depth_png(tmp_path / "d8.png")


def test_real_16bit_depth_fixtures(shared_data):
    d = read_depth_png(shared_data / "open3d_rgbd_samples/depth/00000.png", scale=1000.0)
    assert d.shape == (480, 640) and 0.5 < np.median(d[d > 0]) < 5.0
    nyu = read_depth_png(shared_data / "open3d_rgbd_samples/other_formats/NYU_depth.pgm", scale=1000.0)
    assert nyu.shape == (480, 640) and nyu.dtype == np.float32
