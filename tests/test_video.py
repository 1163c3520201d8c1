"""Video decoding, frame sampling and the errors users get for bad files."""

from __future__ import annotations

import warnings

import av
import numpy as np
import pytest
from PIL import Image

from sharpv import SharpVError
from sharpv.video import FewerFramesWarning, read_video, uniform_indices


def write_video(path, n=12, size=32, codec="libx264", fps=8):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.full((size, size, 3), (10 * i) % 250, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("suffix,codec", [("mp4", "libx264"), ("mkv", "libx264"), ("mov", "libx264"), ("avi", "mpeg4"), ("webm", "libvpx-vp9")])
def test_containers_decode_and_sample_uniformly(tmp_path, suffix, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = write_video(tmp_path / f"clip.{suffix}", n=12, codec=codec)
    video = read_video(path, 4)
    assert video.frames.shape == (4, 32, 32, 3) and video.frames.dtype == np.uint8
    assert video.indices == [0, 4, 7, 11]
    assert video.source_fps == pytest.approx(8.0)
    # brightness grows 10 per frame: the sampled frames are the ones named by the indices
    means = video.frames.reshape(4, -1).mean(1)
    assert np.all(np.diff(means) > 20)


def test_more_frames_than_the_video_has_takes_them_all(tmp_path):
    path = write_video(tmp_path / "short.mp4", n=5)
    with pytest.warns(FewerFramesWarning) as record:
        video = read_video(path, 32)
    assert video.indices == [0, 1, 2, 3, 4] and video.requested_frames == 32
    [warning] = record
    assert str(warning.message) == f"{path} has only 5 frames, fewer than the 32 to sample; sampling all 5"
    assert (warning.message.requested, warning.message.available) == (32, 5)
    for folder_or_file, n in ((path, 5), (path, 3)):  # enough frames: no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error", FewerFramesWarning)
            assert read_video(folder_or_file, n).requested_frames == n
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")
    with pytest.warns(FewerFramesWarning, match="has only 3 frames, fewer than the 4 to sample"):
        assert read_video(tmp_path, 4).indices == [0, 1, 2]


def test_image_folder(tmp_path):
    for i in range(6):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    video = read_video(tmp_path, 3)
    assert video.frames.shape == (3, 20, 30, 3)
    assert video.indices == [0, 2, 5]
    assert video.frames[2].mean() == pytest.approx(200)


def test_uniform_indices():
    assert uniform_indices(100, 5) == [0, 25, 50, 74, 99]
    assert uniform_indices(3, 5) == [0, 1, 2]


def test_bad_inputs_get_clear_errors(tmp_path):
    with pytest.raises(SharpVError, match="does not exist"):
        read_video(tmp_path / "missing.mp4", 8)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video at all " * 50)
    with pytest.raises(SharpVError, match="not a readable video"):
        read_video(text, 8)
    good = write_video(tmp_path / "good.mp4", n=30, size=64)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(SharpVError, match="not a readable video|has no video stream|no decodable frame"):
        read_video(cut, 8)
    mkv = write_video(tmp_path / "good.mkv", n=30, size=64)
    header_only = tmp_path / "header_only.mkv"
    header_only.write_bytes(mkv.read_bytes()[:600])
    with pytest.raises(SharpVError, match="no decodable frame"):
        read_video(header_only, 8)
    with pytest.raises(SharpVError, match="at least 1"):
        read_video(good, 0)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SharpVError, match="holds no images"):
        read_video(tmp_path / "nothing", 4)
