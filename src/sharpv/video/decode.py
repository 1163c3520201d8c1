"""Read videos (PyAV) and folders of images, and sample N frames uniformly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sharpv.errors import SharpVError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class SampledVideo:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    indices: list[int]  # source frame index of every sampled frame
    total_frames: int
    source_fps: float  # frames per second of the source (1.0 for image folders)

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


def _read_image_folder(folder: Path, n: int) -> SampledVideo:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SharpVError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a video file or a folder of frames")
    idx = uniform_indices(len(files), n)
    frames = []
    for i in idx:
        try:
            with Image.open(files[i]) as im:
                im = im.convert("RGB")
                if frames and im.size != (frames[0].shape[1], frames[0].shape[0]):
                    im = im.resize((frames[0].shape[1], frames[0].shape[0]))
                frames.append(np.asarray(im))
        except OSError as exc:
            raise SharpVError(f"{files[i]} is not a readable image ({exc})") from None
    return SampledVideo(np.stack(frames), idx, len(files), 1.0)


def _read_video_file(path: Path, n: int) -> SampledVideo:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise SharpVError(f"{path} is not a readable video ({type(exc).__name__}); pass an mp4, webm, mkv, avi or mov file") from None
    with container:
        streams = container.streams.video
        if not streams:
            raise SharpVError(f"{path} has no video stream")
        stream = streams[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
        total = int(stream.frames or 0)
        wanted = set(uniform_indices(total, n)) if total > 0 else None
        kept: list[tuple[int, np.ndarray]] = []
        count = 0
        try:
            for frame in container.decode(stream):
                if wanted is None or count in wanted:
                    kept.append((count, frame.to_ndarray(format="rgb24")))
                count += 1
        except (av.error.FFmpegError, ValueError) as exc:
            if not kept:
                raise SharpVError(f"{path} is truncated or corrupt: no frame could be decoded ({type(exc).__name__})") from None
            raise SharpVError(f"{path} is truncated or corrupt: decoding stopped after {count} frames") from None
    if not kept:
        raise SharpVError(f"{path} has no decodable frame")
    if total > 0 and count < 0.9 * total:
        raise SharpVError(f"{path} is truncated or corrupt: {count} of its {total} frames decode")
    if wanted is None or len(kept) < len(wanted):
        # The header did not say how many frames there are (or said too many): sample what decoded.
        pick = uniform_indices(len(kept), n)
        kept = [kept[i] for i in pick]
        total = count
    return SampledVideo(np.stack([f for _, f in kept]), [i for i, _ in kept], total, fps)


def read_video(path: str | Path, num_frames: int) -> SampledVideo:
    """Decode ``path`` (a video file or a folder of images) and sample ``num_frames`` frames uniformly."""
    if num_frames < 1:
        raise SharpVError(f"the number of frames must be at least 1, got {num_frames}")
    p = Path(path)
    if not p.exists():
        raise SharpVError(f"{p} does not exist; pass a video file or a folder of frames")
    if p.is_dir():
        return _read_image_folder(p, num_frames)
    return _read_video_file(p, num_frames)
