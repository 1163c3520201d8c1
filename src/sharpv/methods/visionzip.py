"""VisionZip: dominant tokens plus merged contextual tokens, per frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpv.core.baselines import budget_total, even_split
from sharpv.core.dominant_contextual import dominant_contextual_keep
from sharpv.core.merging import merge_onto_representatives
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection


def check_share(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


@dataclass(frozen=True)
class VisionZipConfig(MethodConfig):
    """``contextual_share``: share of each frame's kept tokens that are merged contextual centres
    (VisionZip's default 54 dominant + 10 contextual = 10/64); the rest are dominant tokens."""

    contextual_share: float = 10 / 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check_share(self.contextual_share, "contextual_share")


class VisionZip(PruningMethod):
    """VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language
    Models", CVPR 2025), per frame: the frame's kept tokens are ``dominant`` ones (those receiving
    the most attention, kept as they are) plus ``round(k * contextual_share)`` contextual tokens:
    the remaining tokens are split into centres taken at a uniform stride over them and the
    others, each merged into its most cosine-similar centre; a centre becomes the mean of its group
    (written onto the centre's position by ``transform``).

    Attention: as the official code, the vision encoder's layer -2 (``vision_attention = -2``,
    counted back from the last layer feeding the video features), averaged over heads (the
    official sums them: same ranking) and over the query rows that see the patch (all patches of
    the frame for SigLIP, which has no [CLS]; the temporal step or, in Qwen2.5-VL's window blocks
    such as -2, the window). The runtime recomputes that one map from the layer's own q and k while
    the encoder keeps its SDPA / FlashAttention kernel, and maps it to the LLM tokens as the family
    maps patch features (LLaVA-OneVision: bilinear pooling of the patch map; Qwen: the mean over
    each merged 2x2 block). Fallback, when the video features were precomputed without the method
    applied (no encoder pass to read): a feature self-attention proxy, ``softmax(X X^T /
    sqrt(d))`` over the frame's projected features, column means
    (:func:`sharpv.core.attention_proxy.received_attention`). ``VideoStats.attention_source`` says
    which one ranked the tokens. The contextual similarity is the cosine of the projected features.

    Differences from the official code: contextual merging by the projected features instead of
    that layer's keys (and the proxy when there is no encoder pass);
    it acts on the projected features of every frame, not inside the vision encoder of each image;
    no [CLS] token is kept (there is none after projection); the total is the shared exact budget
    ``budget_total(keep_ratio, T, f)`` split evenly over frames (larger counts first) instead of
    fixed per-image counts such as 54 + 10, with the dominant:contextual split of each frame's
    count from ``contextual_share`` (official default 10 of 64); a frame that keeps all its tokens
    merges nothing."""

    name = "visionzip"
    config_class = VisionZipConfig
    vision_attention = -2

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int],
                      attention: torch.Tensor | None = None) -> VisualSelection:
        n_frames, f = grid.shape[:2]
        counts = even_split(budget_total(self.config.keep_ratio, n_frames, f), n_frames)
        keep, assign = dominant_contextual_keep(grid, counts, self.config.contextual_share, attention=attention)
        return VisualSelection(keep, transform=lambda x: merge_onto_representatives(x, assign))
