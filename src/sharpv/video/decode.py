"""Read videos (PyAV) and folders of images, and sample N frames uniformly.

A video file is sampled from the frames that actually decode, whatever its header claims (variable
frame rate, re-muxed or truncated files often disagree); when the two differ, or the stream is cut
short or damaged, one :class:`VideoReadWarning` says so with both counts. A video with fewer frames
than asked for is sampled whole, and one :class:`FewerFramesWarning` says so. Only a file that does
not open as a video, or yields no frame, raises :class:`SharpVError`.

Streaming: ``read_video(path, n, resize=...)`` resizes every kept frame right after it is decoded
(``resize(frame, count)``: one (H, W, 3) uint8 frame of a clip of ``count`` sampled frames, to the
model's input size), so only ``n`` small frames are ever held and the full-resolution video never
exists in memory. :func:`sharpv.video.read_video_for` passes the processor's own resize, whose
result is bit-identical to resizing the decoded stack afterwards (the resize kernels work frame by
frame). The returned :class:`SampledVideo` then names the decoded size in ``source_size``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from sharpv.errors import SharpVError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


#: ``resize(frame, count)``: one decoded (H, W, 3) uint8 RGB frame of a clip of ``count`` sampled
#: frames -> the frame at the model's input size, (h, w, 3) uint8 (see :func:`read_video`)
FrameResize = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class SampledVideo:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    indices: list[int]  # source frame index of every sampled frame
    total_frames: int
    source_fps: float  # frames per second of the source (1.0 for image folders)
    #: (height, width) of the frames as decoded, when they were resized while decoding (``frames`` then
    #: holds them at the model's input size); None when ``frames`` are at the decoded size
    source_size: tuple[int, int] | None = None
    #: frames :func:`read_video` was asked to sample (more than ``len(indices)`` when the video has
    #: fewer: then every frame was taken and a :class:`FewerFramesWarning` said so); None when the
    #: video was not read by it
    requested_frames: int | None = None

    @property
    def sampled_fps(self) -> float:
        """Rate of the sampled frames: T over the clip's duration."""
        duration = max(self.total_frames / self.source_fps, 1e-6)
        return max(len(self.indices) / duration, 1e-6)


def uniform_indices(total: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over ``total`` frames (all of them if ``n >= total``)."""
    if n < 1:
        raise SharpVError(f"the number of frames must be at least 1, got {n}")
    if total <= n:
        return list(range(total))
    return np.linspace(0, total - 1, n).round().astype(int).tolist()


class _ResizeFailed(Exception):
    """Carries an error of the caller's resize out of a decode pass, past its handlers of decoding
    errors (a SharpVError is a ValueError, which a decode pass would take for damaged data)."""


class _Resizer:
    """Applies a :data:`FrameResize` to each decoded frame of a clip of ``count`` sampled frames,
    remembering the decoded size (all kept frames share it: the first one's).

    The resized frames are written, in decoding order, into one array allocated at the first frame
    (``frames``), not kept as ``count`` small arrays: small allocations that outlive a frame would be
    carved out of the heap space each freed full-resolution frame leaves, so that the next frame
    would have to extend the heap (glibc serves these megabyte buffers from the heap once one was
    freed), and the resident memory grew by a full-resolution frame per frame on some runs."""

    def __init__(self, resize: FrameResize, count: int):
        self.resize, self.count = resize, count
        self.source_size: tuple[int, int] | None = None
        self.buffer: np.ndarray | None = None
        self.filled = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.source_size is None:
            self.source_size = (int(frame.shape[0]), int(frame.shape[1]))
        try:
            out = self.resize(frame, self.count)
        except Exception as exc:
            raise _ResizeFailed() from exc
        if self.buffer is None:
            self.buffer = np.empty((self.count, *out.shape), out.dtype)
        if self.filled >= self.count or out.shape != self.buffer.shape[1:] or out.dtype != self.buffer.dtype:
            return np.array(out)  # not expected (sizes follow the first frame); kept as its own array
        self.buffer[self.filled] = out
        self.filled += 1
        return self.buffer[self.filled - 1]

    def frames(self, kept: list[np.ndarray]) -> np.ndarray:
        """``kept`` (frames this resizer returned, in order) as one (T, h, w, 3) array: the buffer
        itself when they are exactly its frames, else a stack of them."""
        if self.buffer is not None and len(kept) == self.filled and all(
            frame.base is self.buffer and frame.__array_interface__["data"][0] == self.buffer[i].__array_interface__["data"][0]
            for i, frame in enumerate(kept)
        ):
            return self.buffer if self.filled == self.count else self.buffer[: self.filled]
        return np.stack(kept)


def _read_image_folder(folder: Path, n: int, resize: FrameResize | None = None) -> SampledVideo:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SharpVError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a video file or a folder of frames")
    idx = uniform_indices(len(files), n)
    resizer = _Resizer(resize, len(idx)) if resize is not None else None
    frames = []
    first: tuple[int, int] | None = None  # (width, height) of the first image: every image is read at it
    for i in idx:
        try:
            with Image.open(files[i]) as im:
                im = im.convert("RGB")
                if first is not None and im.size != first:
                    im = im.resize(first)
                first = first or im.size
                frame = np.asarray(im)
        except OSError as exc:
            raise SharpVError(f"{files[i]} is not a readable image ({exc})") from None
        frames.append(resizer(frame) if resizer is not None else frame)
        del frame
    if resizer is not None:
        return SampledVideo(resizer.frames(frames), idx, len(files), 1.0, resizer.source_size)
    return SampledVideo(np.stack(frames), idx, len(files), 1.0)


class VideoReadWarning(UserWarning):
    """A video was read, but not as its container describes it: the header's frame count is wrong
    or part of the stream does not decode (cut short, damaged). The frames that decode were sampled;
    the message says how many.
    Silence it with ``warnings.filterwarnings("ignore", category=VideoReadWarning)``."""


class FewerFramesWarning(UserWarning):
    """:func:`read_video` was asked for more frames than the video has: every frame it has was
    sampled, fewer than asked. ``path``, ``requested`` and ``available`` name them.
    Silence it with ``warnings.filterwarnings("ignore", category=FewerFramesWarning)``."""

    def __init__(self, path: str | Path, requested: int, available: int):
        super().__init__(f"{path} has only {available} frames, fewer than the {requested} to sample; "
                         f"sampling all {available}")
        self.path, self.requested, self.available = str(path), requested, available


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What PyAV raises for damaged data (its errors subclass these; FFmpegError covers the rest)."""
    import av

    return (av.error.FFmpegError, ValueError, OSError, EOFError)


def _count_packets(container, stream) -> int:
    """Video packets with data, by demuxing only (no decoding): about 5% of the time of a decode pass."""
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                count += 1
    except _decode_errors():
        pass
    return count


def _decode_pass(path: Path, wanted: set[int], stop_after: int | None = None, transform=None):
    """Decode the first video stream packet by packet, keeping the frames whose index (in the
    decoder's output order, i.e. display order) is in ``wanted`` as RGB arrays (all at the size of the first one kept),
    each passed through ``transform`` (if given) as soon as it is decoded. A packet that fails to
    decode is skipped; an error of the demuxer ends the pass. Returns ``(kept, count, error)``:
    ``count`` frames decoded, ``error`` the name of the first error met (or None)."""
    import av

    kept: list[tuple[int, np.ndarray]] = []
    count = 0
    error: str | None = None
    size: dict[str, int] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except _decode_errors() as exc:
                    error = error or type(exc).__name__
                    continue
                for frame in frames:
                    if count in wanted:
                        rgb = frame.to_ndarray(format="rgb24", **size)
                        size = size or {"width": frame.width, "height": frame.height}
                        kept.append((count, transform(rgb) if transform is not None else rgb))
                        del rgb
                    count += 1
                    if stop_after is not None and count >= stop_after:
                        return kept, count, error
        except _ResizeFailed:
            raise
        except _decode_errors() as exc:
            error = error or type(exc).__name__
    return kept, count, error


def _open_video(path: Path):
    """The opened container of a file with a video stream, or the SharpVError that says why not."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise SharpVError(f"{path} is not a readable video ({type(exc).__name__}); pass an mp4, webm, mkv, avi or mov file") from None
    if not container.streams.video:
        container.close()
        raise SharpVError(f"{path} has no video stream; pass a video file or a folder of frames")
    return container


def _read_video_file(path: Path, n: int, resize: FrameResize | None = None) -> SampledVideo:
    """Sample ``n`` frames uniformly from the frames of ``path`` that decode.

    The container's frame count is not trusted: variable-frame-rate, re-muxed or truncated files
    often claim more (or fewer) frames than decode. Memory stays at ``n`` RGB frames: a demux-only
    pass counts the video packets (cheap, no decoding), a decode pass keeps only the frames that a
    uniform sample over that count wants, and if the number of frames that actually decode differs
    (a packet that does not decode, a codec with hidden frames) a second decode pass keeps the
    frames a uniform sample over the real count wants. Frames are never all held at once.

    When the header's count differs from the decoded count, or decoding met an error (a file cut
    short), one :class:`VideoReadWarning` names both counts. Only a file that cannot be opened or
    yields no frame raises :class:`SharpVError`.

    With ``resize``, each kept frame is resized as soon as it is decoded, for a clip of as many
    frames as the pass plans to keep; the second pass also runs when the real count changes that
    number (the model's input size may depend on it, as Qwen3-VL's does).
    """
    with _open_video(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
        header = int(stream.frames or 0)
        expected = _count_packets(container, stream) or header
    plan = uniform_indices(expected, n) if expected else []
    resizer = _Resizer(resize, len(plan)) if resize is not None and plan else None
    extra = {"transform": resizer} if resizer is not None else {}  # the plain call keeps the plain signature
    kept, count, error = _decode_pass(path, set(plan), **extra)
    if count == 0:
        why = f" ({error})" if error else ""
        raise SharpVError(f"{path} has no decodable frame{why}; the file is empty, cut short or not a video")
    pick = uniform_indices(count, n)
    have = {i: frame for i, frame in kept}
    del kept
    if not all(i in have for i in pick) or (resize is not None and (resizer is None or resizer.count != len(pick))):
        have = {}  # frees the first pass's frames before the second pass decodes
        resizer = _Resizer(resize, len(pick)) if resize is not None else None
        extra = {"transform": resizer} if resizer is not None else {}
        kept, _, _ = _decode_pass(path, set(pick), stop_after=pick[-1] + 1, **extra)
        have = {i: frame for i, frame in kept}
        del kept
        pick = [i for i in pick if i in have]  # the same frames decode again; this guards the impossible
    if (header and header != count) or error:
        said = f"the header says {header} frames but {count} decode" if header else f"{count} frames decode"
        broken = f" ({error} in the stream: cut short or damaged)" if error else ""
        warnings.warn(f"{path}: {said}{broken}; sampling from the {count}", VideoReadWarning, stacklevel=3)
    if resizer is not None:
        return SampledVideo(resizer.frames([have[i] for i in pick]), pick, count, fps, resizer.source_size)
    return SampledVideo(np.stack([have.pop(i) for i in pick]), pick, count, fps)


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise SharpVError(f"{p} does not exist; pass a video file or a folder of frames")
    return p


def check_video(path: str | Path) -> Path:
    """Fail early, without decoding (milliseconds): the :class:`SharpVError` :func:`read_video`
    would raise for a missing path, a folder without images, or a file that does not open as a
    video. A file that opens may still yield no frame; only decoding tells."""
    p = _existing(path)
    if p.is_dir():
        if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()):
            raise SharpVError(f"{p} holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a video file or a folder of frames")
    else:
        _open_video(p).close()
    return p


def read_video(path: str | Path, num_frames: int, resize: FrameResize | None = None) -> SampledVideo:
    """Decode ``path`` (a video file or a folder of images) and sample ``num_frames`` frames uniformly.

    A video file is sampled from the frames that actually decode, whatever its header claims; see
    :func:`_read_video_file` for how, and for the :class:`VideoReadWarning` when the two differ.
    When the video (or folder) has fewer than ``num_frames`` frames, every one of them is taken and
    one :class:`FewerFramesWarning` says so; ``requested_frames`` of the result is ``num_frames``.

    ``resize`` (optional): ``resize(frame, count)`` maps each kept (H, W, 3) uint8 frame, right
    after it is decoded, to the model's input size, ``count`` being the number of frames the
    sample will have. Only the resized frames are kept, so memory holds ``num_frames`` small frames
    and never a full-resolution one beyond the frame being decoded; ``source_size`` of the result
    is the decoded (H, W). The same frames are sampled as without it. Pass a processor's own resize
    (``TorchVideoInputs.resize_frames``, or use :func:`sharpv.video.read_video_for`) to get model
    inputs bit-identical to resizing afterwards."""
    if num_frames < 1:
        raise SharpVError(f"the number of frames must be at least 1, got {num_frames}")
    p = _existing(path)
    try:
        if p.is_dir():
            video = _read_image_folder(p, num_frames, resize)
        else:
            video = _read_video_file(p, num_frames, resize)
    except _ResizeFailed as failed:  # the resize's own error, e.g. a frame count the model refuses
        raise failed.__cause__ from None
    video.requested_frames = num_frames
    if len(video.indices) < num_frames:
        warnings.warn(FewerFramesWarning(p, num_frames, len(video.indices)), stacklevel=2)
    return video


def iter_frames(path: str | Path, fps: float | None = None) -> Iterator[np.ndarray]:
    """Decode a video file one frame at a time, as a live capture would deliver it: (H, W, 3) uint8
    RGB frames in display order, only the current one in memory (feed them to
    :class:`sharpv.streaming.LiveVideo`). With ``fps``, at most that many frames per second of
    video: the first frame at or after every ``1 / fps`` seconds (by the frames' timestamps, or
    their index over the stream's rate when a frame has none). A packet that fails to decode is
    skipped and one :class:`VideoReadWarning` says so at the end."""
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise SharpVError(f"fps must be a number > 0 (or None for every frame), got {fps}")
    p = _existing(path)
    if p.is_dir():
        raise SharpVError(f"{p} is a folder; iter_frames reads a video file (read_video samples folders of frames)")
    _open_video(p).close()
    import av

    errors: list[str] = []
    with av.open(str(p)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
        due, index = 0.0, 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except _decode_errors() as exc:
                    errors.append(type(exc).__name__)
                    continue
                for frame in frames:
                    at = float(frame.time) if frame.time is not None else index / rate
                    index += 1
                    if fps is not None:
                        if at + 1e-9 < due:
                            continue
                        while due <= at + 1e-9:
                            due += 1.0 / fps
                    yield frame.to_ndarray(format="rgb24")
        except _decode_errors() as exc:
            errors.append(type(exc).__name__)
    if errors:
        warnings.warn(f"{p}: {len(errors)} packet(s) failed to decode ({errors[0]}); their frames were skipped",
                      VideoReadWarning, stacklevel=2)
