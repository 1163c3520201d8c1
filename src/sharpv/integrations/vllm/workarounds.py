"""Workarounds for defects of vLLM itself, each isolated here, commented with the vLLM releases it
is for, and applied where the defect's code is there (checked by feature,
:mod:`sharpv.integrations.vllm.features`), not by version string. None patches vLLM's files; each
wraps one method once, in the process that loads the plugin."""

from __future__ import annotations

_MARK = "_sharpv_workaround"


def apply_workarounds(cpu: bool) -> None:
    """``cpu``: whether vLLM runs on its CPU platform."""
    if cpu:
        from sharpv.integrations.vllm.features import cpu_runner_workaround

        if cpu_runner_workaround():
            _cpu_runner_sets_the_pruning_flag()


def _cpu_runner_sets_the_pruning_flag() -> None:
    """vLLM 0.32 and 0.33 (``vllm.v1.worker.cpu_model_runner``, the same file in both):
    ``GPUModelRunner.load_model`` sets ``is_multimodal_pruning_enabled`` after the model is built;
    ``CPUModelRunner`` overrides ``load_model`` and never does, so the CPU runner skips the M-RoPE
    recomputation pruned videos need and merging the pruned embeddings fails with a shape mismatch
    (EVS as well as SharpV). After the CPU runner's ``load_model``, set the flag the way the GPU
    runner does. vLLM 0.34 removed that runner; its CPU runner (``vllm.v1.worker.cpu``) builds the
    recomputation itself whenever pruning is on, and this is not applied there."""
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    original = CPUModelRunner.load_model
    if getattr(original, _MARK, False):
        return

    def load_model(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        config = self.model_config.multimodal_config
        self.is_multimodal_pruning_enabled = bool(
            supports_multimodal_pruning(self.get_model()) and config is not None and config.is_multimodal_pruning_enabled()
        )
        return result

    setattr(load_model, _MARK, True)
    load_model.__wrapped__ = original
    CPUModelRunner.load_model = load_model


def without_outer_vision_start(input_ids, vision_start: int, video: int, image: int):
    """vLLM 0.32 to 0.34 (the same code in all three), Qwen3-VL with a pruned video:
    ``recompute_mrope_positions`` assumes every
    ``<|vision_start|>`` opens media. Since transformers 5.10 the chat template's own
    ``<|vision_start|><|video_pad|><|vision_end|>`` stays around the expanded video, so an outer
    ``<|vision_start|>`` precedes the first ``<t seconds>`` text and the recomputation writes the
    positions at the wrong offset (it fails, EVS as well). Returns ``input_ids`` (a list or a
    tensor, as given) with every vision_start that is followed by another vision_start before any
    media token replaced by -1, which the recomputation treats as text, as the model does."""
    import torch

    ids = torch.as_tensor(input_ids)
    special = ((ids == vision_start) | (ids == video) | (ids == image)).nonzero().squeeze(1)
    starts = (ids == vision_start).nonzero().squeeze(1)
    if starts.numel() == 0:
        return input_ids
    following = torch.searchsorted(special, starts, right=True)
    has_next = following < special.numel()
    outer = starts[has_next][ids[special[following[has_next]]] == vision_start]
    if outer.numel() == 0:
        return input_ids
    fixed = ids.clone()
    fixed[outer] = -1
    return fixed.tolist() if isinstance(input_ids, list) else fixed.to(input_ids.device)
