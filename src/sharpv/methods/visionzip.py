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

    Attention weights: the official code reads the vision encoder's attention (layer -2, summed
    over heads: the [CLS] row for CLIP, the mean over query rows for encoders without [CLS] such as
    SigLIP) and merges by the similarity of that layer's keys. Only the projected features reach a
    pre-LLM method here, so the attention a token receives is computed from a feature
    self-attention proxy, ``softmax(X X^T / sqrt(d))`` over the frame, column means, and the
    contextual similarity is the cosine of the projected features. Needs no attention weights from
    the model.

    Differences from the official code: the proxy above instead of encoder attention and keys;
    it acts on the projected features of every frame, not inside the vision encoder of each image;
    no [CLS] token is kept (there is none after projection); the total is the shared exact budget
    ``budget_total(keep_ratio, T, f)`` split evenly over frames (larger counts first) instead of
    fixed per-image counts such as 54 + 10, with the dominant:contextual split of each frame's
    count from ``contextual_share`` (official default 10 of 64); a frame that keeps all its tokens
    merges nothing."""

    name = "visionzip"
    config_class = VisionZipConfig

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int]) -> VisualSelection:
        n_frames, f = grid.shape[:2]
        counts = even_split(budget_total(self.config.keep_ratio, n_frames, f), n_frames)
        keep, assign = dominant_contextual_keep(grid, counts, self.config.contextual_share)
        return VisualSelection(keep, transform=lambda x: merge_onto_representatives(x, assign))
