"""Vision-encoder attention for VisionZip / FastVID / FlashVID / HoliTom: recomputed from one encoder
layer's q and k by a hook (the encoder keeps SDPA), equal to the eager encoder's real attention
weights, mapped to the LLM token grid as each family maps patch features, used by the methods,
removed with them, and replaced by the feature proxy when there is no encoder pass."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from conftest import Family
from sharpv.adapters import adapter_for, precompute_video_features
from sharpv.core.attention_proxy import received_attention
from sharpv.core.vision_attention import received_attention_qk
from sharpv.methods import PruningMethod
from sharpv.methods.fastvid import FastVID
from sharpv.methods.flashvid import FlashVID
from sharpv.methods.holitom import HoliTom
from sharpv.methods.visionzip import VisionZip

_EAGER: dict[str, Family] = {}


def eager_twin(family: Family) -> Family:
    key = str(family.path)
    if key not in _EAGER:
        _EAGER[key] = Family(family.arch, family.path, attn="eager")
    return _EAGER[key]


@pytest.fixture(scope="module")
def dinov2_family(tmp_path_factory) -> Family:
    """LLaVA-OneVision with a DINOv2 tower (class token, ``encoder.layer``, "default" strategy):
    the layout of ``smollm2-dinov2``, tiny and random."""
    from test_pretrained_train import tiny_base

    return Family("llava-onevision", tiny_base(tmp_path_factory.mktemp("dinov2")))


class ReadsLayer(PruningMethod):
    """Keeps everything; records the attention it is given (the runtime's per-video maps)."""

    name = "reads-layer"

    def __init__(self, layer: int):
        super().__init__()
        self.vision_attention = layer
        self.seen: list = []

    def select_visual(self, grid, spatial, attention=None):
        self.seen.append(attention)
        return None


def test_received_attention_qk_matches_explicit_softmax():
    torch.manual_seed(0)
    q, k = torch.randn(3, 10, 4), torch.randn(3, 10, 4)
    got = received_attention_qk(q, k, 0.5, [4, 6])
    expected = []
    for a, b in ((0, 4), (4, 10)):
        w = torch.softmax(q[:, a:b] @ k[:, a:b].transpose(1, 2) * 0.5, dim=-1)
        expected.append(w.mean(0).mean(0))
    torch.testing.assert_close(got, torch.cat(expected))
    torch.testing.assert_close(got[:4].sum(), torch.tensor(1.0))
    batched = received_attention_qk(q[None].expand(2, -1, -1, -1), k[None].expand(2, -1, -1, -1), 0.5)
    assert batched.shape == (2, 10)


def _eager_token_attention(family: Family, layer: int, inputs: dict, monkeypatch) -> list[torch.Tensor]:
    """The chosen layer's received attention from the eager encoder's real attention weights,
    mapped to tokens the documented way, independently of the hook."""
    twin = eager_twin(family)
    adapter = adapter_for(twin.model)
    index = adapter.resolve_vision_layer(layer)
    target = adapter.vision_attention_module(index)
    module = sys.modules[type(target).__module__]
    original = module.eager_attention_forward
    weights: list[torch.Tensor] = []

    def recording(mod, query, key, value, attention_mask, *args, **kwargs):
        out, w = original(mod, query, key, value, attention_mask, *args, **kwargs)
        if mod is target:
            weights.append(w.detach().float())
        return out, w

    monkeypatch.setattr(module, "eager_attention_forward", recording)
    merged: list[torch.Tensor] = []
    handle = None
    if family.arch != "llava-onevision":
        handle = twin.model.model.visual.merger.register_forward_hook(lambda m, a, out: merged.append(out.detach()))
    try:
        with torch.no_grad():
            out = adapter.encode(inputs)
    finally:
        monkeypatch.setattr(module, "eager_attention_forward", original)
        if handle is not None:
            handle.remove()
    grids = adapter.grids(out, inputs)
    if family.arch == "llava-onevision":
        (w,) = weights  # (frames, heads, patches, patches)
        per_patch = w.mean(1).mean(1)
        if twin.model.config.vision_feature_select_strategy == "default":
            per_patch = per_patch[:, 1:]  # the class token's column goes, as its feature does
        vision = twin.model.config.vision_config
        side = vision.image_size // vision.patch_size
        pooled = torch.nn.functional.interpolate(per_patch.view(-1, 1, side, side), size=[math.ceil(side / 2)] * 2, mode="bilinear")
        flat = pooled.reshape(per_patch.shape[0], -1)
        return list(flat.split([g.shape[0] for g in grids.grids]))
    # Qwen: one weight map per cu_seqlens segment, patches in the block's (window) order
    per_patch = torch.cat([w[0].mean(0).mean(0) for w in weights])
    unit = adapter.merge**2
    per_group = per_patch.view(-1, unit).mean(-1)  # the merger's groups, in block order
    (block_tokens,) = merged
    final = torch.cat(list(out.pooler_output))  # tokens in the order the LLM receives them
    order = torch.cdist(final.float(), block_tokens.float()).argmin(1)  # where each token was in block order
    assert torch.equal(final, block_tokens[order])
    flat = per_group[order]
    return [part.view(g.shape[:2]) for part, g in zip(flat.split([g.shape[0] * g.shape[1] for g in grids.grids]), grids.grids)]


@pytest.mark.parametrize("layer", [-2, -1])
def test_hook_equals_eager_attention_weights(family, layer, monkeypatch):
    inputs = family.inputs(n_frames=4)
    expected = _eager_token_attention(family, layer, inputs, monkeypatch)
    method = ReadsLayer(layer)
    with torch.no_grad(), method(family.model) as handle:  # the SDPA model: attention kernel unchanged
        family.model(**inputs)
    (got,) = method.seen
    assert handle.stats.videos[0].attention_source == "vision encoder"
    assert got.shape == expected[0].shape == handle.stats.videos[0].keep.shape
    torch.testing.assert_close(got, expected[0], atol=1e-6, rtol=1e-4)
    # the map is not flat: ranking by it means something
    assert float(got.std()) > 0


@pytest.mark.parametrize("layer", [-2, -1])
def test_hook_equals_eager_attention_weights_on_a_dinov2_tower(dinov2_family, layer, monkeypatch):
    """smollm2-dinov2's layout: the map skips DINOv2's class token and every vision-attention
    method runs on it (VisionZip once failed here: DINOv2 names its layers ``encoder.layer``)."""
    assert dinov2_family.model.config.vision_config.model_type == "dinov2"
    inputs = dinov2_family.inputs(n_frames=4)
    expected = _eager_token_attention(dinov2_family, layer, inputs, monkeypatch)
    method = ReadsLayer(layer)
    with torch.no_grad(), method(dinov2_family.model) as handle:
        dinov2_family.model(**inputs)
    (got,) = method.seen
    assert handle.stats.videos[0].attention_source == "vision encoder"
    assert got.shape == expected[0].shape == handle.stats.videos[0].keep.shape
    torch.testing.assert_close(got, expected[0], atol=1e-6, rtol=1e-4)
    assert float(got.std()) > 0
    for method in (VisionZip(keep_ratio=0.3), FastVID(keep_ratio=0.3), FlashVID(keep_ratio=0.3), HoliTom(keep_ratio=0.3)):
        with torch.no_grad(), method(dinov2_family.model) as handle:
            dinov2_family.model.generate(**inputs, max_new_tokens=2, do_sample=False)
        assert handle.stats.videos[0].attention_source == "vision encoder", method.name


def _top_per_frame(scores: torch.Tensor, counts: list[int]) -> torch.Tensor:
    keep = torch.zeros(scores.shape, dtype=torch.bool)
    for t, k in enumerate(counts):
        keep[t, torch.sort(scores[t], descending=True, stable=True).indices[:k]] = True
    return keep


@pytest.mark.parametrize(
    "method",
    [
        VisionZip(keep_ratio=0.3, contextual_share=0.0),
        HoliTom(keep_ratio=0.3, temporal_threshold=1.0, contextual_share=0.0),
    ],
    ids=["visionzip", "holitom"],
)
def test_methods_keep_the_top_tokens_of_the_encoder_map(family, method):
    inputs = family.inputs(n_frames=4)
    probe = ReadsLayer(method.vision_attention)
    with torch.no_grad(), probe(family.model):
        family.model(**inputs)
    (scores,) = probe.seen
    with torch.no_grad(), method(family.model) as handle:
        family.model(**inputs)
    stats = handle.stats
    video = stats.videos[0]
    assert video.attention_source == "vision encoder"
    assert stats.extra_seconds > 0
    # no contextual tokens, no static merging: each frame keeps exactly its most attended tokens
    assert torch.equal(video.keep, _top_per_frame(scores.cpu(), video.kept_per_frame))
    assert video.tokens_kept == max(1, round(0.3 * video.tokens_in))


def test_hooks_are_removed_and_the_model_is_unchanged(family):
    inputs = family.inputs(n_frames=4)
    adapter = adapter_for(family.model)
    tower, attn = adapter.vision_tower(), adapter.vision_attention_module(adapter.resolve_vision_layer(-2))

    def counts():
        return [len(m._forward_pre_hooks) + len(m._forward_hooks) for m in (tower, attn)]

    before_hooks = counts()
    with torch.no_grad():
        before = family.model(**inputs).logits
    handle = VisionZip(keep_ratio=0.3)(family.model)
    assert counts() != before_hooks
    with torch.no_grad():
        family.model(**inputs)
    handle.remove()
    assert counts() == before_hooks
    with torch.no_grad():
        after = family.model(**inputs).logits
        out = adapter.encode(inputs)
    assert torch.equal(before, after)
    assert adapter.patch_record(out) is None  # nothing records any more


def test_precomputed_features_fall_back_to_the_proxy(family):
    inputs = family.inputs(n_frames=4)
    pre = precompute_video_features(family.model, inputs)  # encoded with no method applied
    method = VisionZip(keep_ratio=0.3, contextual_share=0.0)
    with torch.no_grad(), method(family.model) as handle:
        family.model(**pre)
    video = handle.stats.videos[0]
    assert video.attention_source == "feature proxy"
    adapter = adapter_for(family.model)
    grid = adapter.grids(pre["mm_encoder_outputs"]["video"], pre).grids[0]
    assert torch.equal(video.keep, _top_per_frame(received_attention(grid).cpu(), video.kept_per_frame))
    assert handle.stats.to_dict()["videos"][0]["attention_source"] == "feature proxy"


def test_chunked_encoding_under_the_method_carries_the_encoder_map(family):
    inputs = family.inputs(n_frames=4)
    probe = ReadsLayer(-1)
    with torch.no_grad(), probe(family.model):
        family.model(**inputs)
        pre = precompute_video_features(family.model, inputs, chunk_frames=2)  # several vision-tower calls
        family.model(**pre)
    one_shot, chunked = probe.seen
    torch.testing.assert_close(chunked, one_shot, atol=1e-6, rtol=1e-4)


def test_other_methods_report_no_attention_source(family):
    from sharpv.methods.random_tokens import RandomTokens

    with torch.no_grad(), RandomTokens(keep_ratio=0.5)(family.model) as handle:
        family.model(**family.inputs(n_frames=4))
    assert handle.stats.videos[0].attention_source is None


def test_fastvid_and_flashvid_read_the_encoder_under_generate(family):
    inputs = family.inputs(n_frames=4)
    for method in (FastVID(keep_ratio=0.3), FlashVID(keep_ratio=0.3)):
        with torch.no_grad(), method(family.model) as handle:
            family.model.generate(**inputs, max_new_tokens=2, do_sample=False)
        assert handle.stats.videos[0].attention_source == "vision encoder"
