"""A small synthetic clip (static textured background, one moving square) written with PyAV.

It lets the README's main command and bug reports run without any downloaded video.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_frames(n_frames: int = 32, size: int = 128, seed: int = 0) -> np.ndarray:
    """(T, size, size, 3) uint8 frames: a seeded texture with a red square moving left to right."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 200, (size // 8, size // 8, 3), dtype=np.uint8)
    background = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))
    frames = np.repeat(background[None], n_frames, axis=0)
    side = size // 4
    for t in range(n_frames):
        x = int((size - side) * t / max(n_frames - 1, 1))
        frames[t, size // 3 : size // 3 + side, x : x + side] = (220, 30, 30)
    return frames


def write_sample_video(path: str | Path, n_frames: int = 32, size: int = 128, fps: int = 8, seed: int = 0) -> Path:
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for frame in sample_frames(n_frames, size, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
