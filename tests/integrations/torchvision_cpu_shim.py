"""Test-environment shim, installed by .ci/integration_vllm.sh and .ci/integration_lmms_eval.sh into their virtualenvs as a ``.pth`` import (never
part of the library): PyPI's torchvision 0.28.0 is CUDA-linked, and next to the CPU torch its import
fails with "operator torchvision::nms does not exist" unless these two operator schemas exist first.
vLLM's processors import torchvision in every engine process, hence the ``.pth``."""

try:
    import torch.library

    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except Exception:  # already defined (a real torchvision build, or a second import)
    pass
