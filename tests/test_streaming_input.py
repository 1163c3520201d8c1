"""Streaming input (issue 11): frames are resized to the model's input size as they are decoded, and
the model inputs are exactly those of today's path (``read_video`` then ``build_inputs``).

Checked with torch.equal on every input, for the three tiny families and the shipped model, on mp4
clips of several sizes written here with PyAV, on image folders, and on a file whose packet count
is not its frame count (the second decode pass, where Qwen3-VL's input size changes with the count).
"""

from __future__ import annotations

import tracemalloc

import av
import numpy as np
import pytest
import torch
from PIL import Image

from sharpv import SharpVError
from sharpv.synthetic.model import shipped_model_path
from sharpv.tiny import ARCHES
from sharpv.video import TorchVideoInputs, build_inputs, load_processor, read_video, read_video_for, uniform_indices
from sharpv.video import decode

QUESTION = "what color is the square ?"


def textured_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Noise, stripes and a checkerboard panning, with a square and a disk moving over them."""
    rng = np.random.default_rng(seed)
    pad = 4 * n + 8
    yy, xx = np.mgrid[0 : height + pad, 0 : width + pad].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(xx / 5) * np.cos(yy / 9), 255 * xx / (width + pad), 255 * ((xx // 6 + yy // 6) % 2)], -1)
    base[(yy.astype(int) // 4) % 5 == 0] = 250
    base = np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)
    frames = []
    for t in range(n):
        f = base[(3 * t) % pad : (3 * t) % pad + height, (2 * t) % pad : (2 * t) % pad + width].copy()
        s = max(4, min(height, width) // 5)
        y, x = (5 * t) % (height - s), (7 * t) % (width - s)
        f[y : y + s, x : x + s] = (230, 30, 40)
        disk = (np.arange(height)[:, None] - (height - 1 - 4 * t % height)) ** 2 + (np.arange(width)[None] - 9 * t % width) ** 2
        f[disk < (s // 2) ** 2] = (20, 200, 90)
        frames.append(f)
    return np.stack(frames)


def write_mp4(path, frames: np.ndarray, fps: int = 25):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


#: (name, height, width, source frames)
CLIPS = [("320x240", 240, 320, 23), ("768x576", 576, 768, 11), ("202x118", 118, 202, 9)]
#: frame counts asked for: odd (Qwen pads the last temporal step), even, and more than the clip has
COUNTS = [5, 8, 40]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {name: write_mp4(root / f"{name}.mp4", textured_frames(n, h, w, seed=i)) for i, (name, h, w, n) in enumerate(CLIPS)}


@pytest.fixture(scope="module")
def processors(tiny_dirs):
    procs = {arch: load_processor(tiny_dirs[arch], arch, backend="torch") for arch in ARCHES}
    procs["shipped"] = load_processor(shipped_model_path(), "llava-onevision", backend="torch")
    return procs


def assert_same_inputs(ours: dict, theirs: dict, label: str) -> None:
    assert sorted(ours) == sorted(theirs), label
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape, (label, key)
        assert torch.equal(ours[key], theirs[key]), (label, key)


def assert_same_video(streamed, plain, proc: TorchVideoInputs, label: str) -> None:
    assert streamed.indices == plain.indices and streamed.total_frames == plain.total_frames, label
    assert streamed.source_fps == plain.source_fps, label
    assert streamed.source_size == tuple(plain.frames.shape[1:3]), label
    assert streamed.frames.dtype == np.uint8, label
    size = proc.input_size(*plain.frames.shape[1:3], len(plain.indices))
    assert streamed.frames.shape == (len(plain.indices), *(size or plain.frames.shape[1:3]), 3), label


@pytest.mark.parametrize("model", [*ARCHES, "shipped"])
def test_streamed_mp4_gives_the_same_inputs(clips, processors, model):
    proc = processors[model]
    for name, path in clips.items():
        for n in COUNTS:
            label = f"{model}:{name}:{n} frames"
            plain = read_video(path, n)
            streamed = read_video_for(proc, path, n)
            assert_same_video(streamed, plain, proc, label)
            assert_same_inputs(build_inputs(proc, QUESTION, streamed), build_inputs(proc, QUESTION, plain), label)


def test_per_frame_resize_equals_resizing_the_stack(processors):
    """The ground the streaming stands on: each frame resized alone is bit-identical to the frame
    resized in the stack, for every family's size rule and several source sizes (down and up)."""
    for model, proc in processors.items():
        for h, w in [(576, 768), (241, 317), (36, 48), (90, 20)]:
            frames = textured_frames(6, h, w, seed=h)
            whole = proc.resize_frames(frames, 6)
            one_by_one = np.stack([proc.resize_frames(f, 6) for f in frames])
            assert whole.shape == one_by_one.shape and np.array_equal(whole, one_by_one), (model, h, w)
            assert whole.shape[1:3] == proc.input_size(h, w, 6), (model, h, w)


def test_qwen3_input_size_depends_on_the_frame_count(processors):
    """Why ``resize(frame, count)`` gets the clip's frame count: Qwen3-VL budgets pixels per clip."""
    proc = processors["qwen3-vl"]
    assert proc.input_size(240, 320, 4) != proc.input_size(240, 320, 16)
    with pytest.raises(SharpVError, match="at least 2 frames"):
        proc.input_size(240, 320, 1)


def test_image_folder_streams_too(tmp_path, processors):
    frames = textured_frames(9, 240, 320, seed=5)
    for i, f in enumerate(frames):
        image = Image.fromarray(f)
        if i == 4:  # a frame of another size: read at the first image's size, as before
            image = image.resize((300, 200))
        image.save(tmp_path / f"{i:03d}.png")
    for model, proc in processors.items():
        for n in (3, 6, 20):
            plain = read_video(tmp_path, n)
            streamed = read_video_for(proc, tmp_path, n)
            assert_same_video(streamed, plain, proc, f"{model}:{n}")
            assert_same_inputs(build_inputs(proc, QUESTION, streamed), build_inputs(proc, QUESTION, plain), f"{model}:{n}")


def test_count_that_changes_after_the_first_pass(clips, processors, monkeypatch):
    """The packet count (the first pass's plan) overstates the frames that decode: the frames are
    resized again for the real count (Qwen3-VL's size depends on it) and still match."""
    path = clips["320x240"]
    real = decode._count_packets
    monkeypatch.setattr(decode, "_count_packets", lambda container, stream: real(container, stream) + 9)
    for model in ("qwen3-vl", "qwen2.5-vl", "llava-onevision"):
        proc = processors[model]
        plain = read_video(path, 30)
        streamed = read_video_for(proc, path, 30)
        assert plain.indices == uniform_indices(23, 30)
        assert_same_video(streamed, plain, proc, model)
        assert_same_inputs(build_inputs(proc, QUESTION, streamed), build_inputs(proc, QUESTION, plain), model)


def test_qwen3_refuses_one_frame_while_reading(clips, processors):
    with pytest.raises(SharpVError, match="at least 2 frames"):
        read_video_for(processors["qwen3-vl"], clips["320x240"], 1)


def test_frames_resized_for_another_model_are_refused(clips, processors):
    streamed = read_video_for(processors["llava-onevision"], clips["320x240"], 6)  # 64 x 64
    with pytest.raises(SharpVError, match="resized to 64 x 64 while decoding"):
        build_inputs(processors["qwen3-vl"], QUESTION, streamed)


def test_transformers_processors_get_frames_as_decoded(clips, processors):
    """Only the torch stand-in streams; anything else gets read_video's frames (and refuses resized ones)."""

    class Other:
        def apply_chat_template(self, conversation, add_generation_prompt=True):
            return "x"

    video = read_video_for(Other(), clips["202x118"], 4)
    assert video.source_size is None and video.frames.shape == (4, 118, 202, 3)
    streamed = read_video_for(processors["qwen2.5-vl"], clips["202x118"], 4)
    with pytest.raises(SharpVError, match="resized while decoding"):
        build_inputs(Other(), QUESTION, streamed)


def test_streaming_never_holds_the_full_resolution_video(tmp_path, processors):
    """Peak traced (numpy) memory: the plain path holds every sampled 768x576 frame (twice, list and
    stack); the streamed one holds one full-resolution frame at a time plus the small frames."""
    n = 40
    path = write_mp4(tmp_path / "long.mp4", textured_frames(n, 576, 768, seed=3))
    frame_bytes = 576 * 768 * 3
    proc = processors["llava-onevision"]
    peaks = {}
    for label, read in (("plain", lambda: read_video(path, n)), ("streamed", lambda: read_video_for(proc, path, n))):
        tracemalloc.start()
        video = read()
        peaks[label] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del video
    assert peaks["plain"] >= n * frame_bytes, peaks
    assert peaks["streamed"] <= 4 * frame_bytes, peaks


def test_image_folder_refusal_comes_through(tmp_path, processors):
    Image.fromarray(textured_frames(1, 40, 60)[0]).save(tmp_path / "only.png")
    with pytest.raises(SharpVError, match="at least 2 frames"):
        read_video_for(processors["qwen3-vl"], tmp_path, 4)
