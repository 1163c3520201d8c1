"""Test-only helper: the model's own transformers processor on a list of clips, in its own process.

Run as ``python tests/processor_parity_ref.py CASES OUT``: ``CASES`` is a ``torch.save``d list of
dicts (``path``, ``family``, ``question``, ``frames``, ``indices``, ``total_frames``, ``fps``);
``OUT`` receives, for each case, the dict of tensors ``AutoProcessor`` returns (through
:func:`sharpv.video.build_inputs`, the call the library itself makes), or an error marker.

Why a separate process: importing torchvision here needs two operator schemas registered first
(below), and once torchvision imports, ``load_processor(..., backend="auto")`` picks
``AutoProcessor`` for the rest of that process. Keeping all of it in a child process means the
parity test cannot change which processor the rest of the test suite gets, whatever the order.
"""

from __future__ import annotations

import sys


def import_torchvision() -> str | None:
    """Import torchvision; return None on success, else why it failed.

    TEST-ONLY WORKAROUND. PyPI's torchvision wheel is built against CUDA torch; on the CPU build of
    torch its compiled ops library (``torchvision/_C.so``) cannot load, and ``import torchvision``
    then fails with "operator torchvision::nms does not exist" because its Python side registers
    fake (meta) kernels for ``torchvision::nms`` and ``torchvision::qnms``, which need the schemas.
    We define those two schemas, exactly as torchvision's C++ code does
    (csrc/ops/nms.cpp, csrc/ops/quantized/cpu/qnms_kernel.cpp), so the pure-Python parts that
    transformers' video processors use (``transforms.v2.functional``: resize, normalize, ...) import.
    The ops themselves have no kernel and are never called. This must never move into ``src/``:
    the library has to keep working, and keep its own fallback, without torchvision.
    """
    import torch

    try:
        import torchvision.transforms.v2.functional  # noqa: F401

        return None
    except Exception as first:  # noqa: BLE001 - any failure means "try the workaround"
        reason = f"{type(first).__name__}: {first}"
    for name in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{name}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            pass  # already defined (a working torchvision build, or a second call)
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    try:
        import torchvision.transforms.v2.functional  # noqa: F401, F811
    except Exception as exc:  # noqa: BLE001
        return f"{reason}; with the test-only nms/qnms schemas: {type(exc).__name__}: {exc}"
    return None


def main(cases_file: str, out_file: str) -> None:
    import torch

    problem = import_torchvision()
    if problem is not None:
        torch.save({"torchvision_error": problem}, out_file)
        return
    import torchvision

    from sharpv.video import SampledVideo, build_inputs, load_processor

    cases = torch.load(cases_file, weights_only=False)
    processors: dict = {}
    results = []
    for case in cases:
        key = (str(case["path"]), case["family"])
        if key not in processors:
            processors[key] = load_processor(case["path"], case["family"], backend="transformers")
        video = SampledVideo(case["frames"], list(case["indices"]), case["total_frames"], case["fps"])
        try:
            out = build_inputs(processors[key], case["question"], video)
            results.append({k: v for k, v in out.items() if isinstance(v, torch.Tensor)})
        except Exception as exc:  # noqa: BLE001 - reported per case by the test
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    torch.save({"torchvision": torchvision.__version__, "results": results}, out_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
