"""DivPrune, VisionZip and FastVID: exact budgets, constructed cases with known answers, the merge
transforms, config validation, and one end-to-end run per method against the hand-pruned reference."""

from __future__ import annotations


import pytest
import torch
from reference import run_layers, stage1_by_hand, with_encoder_attention

from sharpv.core.attention_proxy import received_attention
from sharpv.core.baselines import budget_total
from sharpv.core.density import density_peak_scores
from sharpv.core.density_pruning import (
    anchor_frames,
    capped_split,
    density_pruning_keep,
)
from sharpv.core.diversity import cosine_distance_matrix, max_min_select
from sharpv.core.dominant_contextual import dominant_contextual_keep
from sharpv.core.merging import merge_onto_representatives
from sharpv.core.temporal_segments import segment_lengths
from sharpv.methods.divprune import DivPrune
from sharpv.methods.fastvid import FastVID
from sharpv.methods.visionzip import VisionZip

#: (T, f, d, (h, w)) grids of tests/test_baselines.py
GRIDS = [(1, 1, 1, (1, 1)), (1, 4, 3, (2, 2)), (3, 6, 2, (2, 3)), (8, 16, 4, (4, 4)), (5, 9, 8, (3, 3))]

VARIANTS = [
    (DivPrune, {}), (DivPrune, {"scope": "frame"}),
    (VisionZip, {}), (VisionZip, {"contextual_share": 0.0}), (VisionZip, {"contextual_share": 1.0}),
    (FastVID, {}), (FastVID, {"min_segments": 1, "contextual_share": 1.0, "anchor_stride": 2}),
    (FastVID, {"contextual_share": 0.0}), (FastVID, {"min_segments": 1, "cut_threshold": -1.0, "anchor_stride": 100}),
]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- (a) exact budget, never zero tokens ------------------------------------------------------

@pytest.mark.parametrize("cls,settings", VARIANTS, ids=lambda v: getattr(v, "name", None) or repr(v))
def test_the_exact_budget_and_never_zero_tokens(cls, settings):
    for t, f, d, spatial in GRIDS:
        grid = torch.randn(t, f, d, generator=_gen(t * 31 + f))
        for ratio in (0.001, 1e-6, 0.05, 0.3, 0.77, 1.0):
            sel = cls(keep_ratio=ratio, **settings).select_visual(grid, spatial)
            keep = sel.keep
            assert keep.shape == (t, f) and keep.dtype == torch.bool
            want = budget_total(ratio, t, f)
            assert want == max(1, round(ratio * t * f))
            assert int(keep.sum()) == want >= 1, (cls.name, settings, t, f, ratio)
            if sel.transform is not None:
                out = sel.transform(grid)
                assert out.shape == grid.shape and out.dtype == grid.dtype and torch.isfinite(out).all()


def test_budgets_hold_on_degenerate_features():
    """All-equal and all-zero tokens: no NaN, no token picked twice, still the exact budget."""
    two_values = torch.eye(6)[torch.arange(36) % 2].view(4, 9, 6)  # exact duplicates of two tokens
    for grid in (torch.ones(4, 9, 6), torch.zeros(4, 9, 6), two_values):
        for cls in (DivPrune, VisionZip, FastVID):
            for ratio in (0.1, 0.5, 1.0):
                sel = cls(keep_ratio=ratio).select_visual(grid, (3, 3))
                assert int(sel.keep.sum()) == budget_total(ratio, 4, 9)
                if sel.transform is not None:
                    out = sel.transform(grid)
                    assert torch.isfinite(out).all()
                    if grid is not two_values:  # every token equal: merging changes nothing
                        torch.testing.assert_close(out, grid)


# --- (b) DivPrune ------------------------------------------------------------------------------

def _clusters(n_clusters: int, size: int, d: int, seed: int, spread: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around ``n_clusters`` orthogonal directions (well separated in angle), shuffled."""
    g = _gen(seed)
    centres = torch.linalg.qr(torch.randn(d, d, generator=g)).Q[:n_clusters] * 5.0
    labels = torch.arange(n_clusters).repeat_interleave(size)
    points = centres[labels] + spread * torch.randn(n_clusters * size, d, generator=g)
    perm = torch.randperm(labels.numel(), generator=g)
    return points[perm], labels[perm]


def test_divprune_keeps_one_token_per_well_separated_cluster_over_the_video():
    points, labels = _clusters(4, 6, 16, seed=0)
    grid = points.view(4, 6, 16)  # clusters spread over frames
    keep = DivPrune(keep_ratio=4 / 24).select_visual(grid, (2, 3)).keep
    assert int(keep.sum()) == 4
    assert sorted(labels[keep.view(-1)].tolist()) == [0, 1, 2, 3]


def test_divprune_first_pick_is_the_most_isolated_token_and_later_picks_are_max_min():
    g = _gen(1)
    e = torch.eye(8)
    points = torch.cat([e[0] + 0.05 * torch.randn(5, 8, generator=g), e[1] + 0.05 * torch.randn(5, 8, generator=g)])
    lone = (e[2] + 0.3 * e[0])[None]  # its nearest neighbour is farther than anyone else's
    x = torch.cat([points[:3], lone, points[3:]])  # the isolated token sits at index 3
    dist = cosine_distance_matrix(x[None])
    isolation = dist[0].masked_fill(torch.eye(11, dtype=torch.bool), 2.0).min(1).values
    keep, order = max_min_select(dist, torch.tensor([5]))
    assert int(isolation.argmax()) == 3 and int(order[0, 0]) == 3
    # every later pick maximises the minimum distance to the picks before it
    for step in range(1, 5):
        chosen = order[0, :step]
        min_dist = dist[0][chosen].min(0).values
        min_dist[chosen] = -1
        assert int(order[0, step]) == int(min_dist.argmax())
    assert keep[0].sum() == 5 and keep[0, order[0]].all()


def test_divprune_frame_scope_keeps_the_even_split_per_frame():
    grid = torch.randn(3, 8, 5, generator=_gen(2))
    keep = DivPrune(keep_ratio=10 / 24, scope="frame").select_visual(grid, (2, 4)).keep
    assert keep.sum(1).tolist() == [4, 3, 3]


# --- (b) VisionZip -----------------------------------------------------------------------------

DOMINANT = [0, 5, 9, 14]
GROUP_A = [1, 3, 4, 7, 11, 15]  # centre 1 (first remaining token)
GROUP_B = [2, 6, 8, 10, 12, 13]  # centre 8 (remaining[12 // 2])


def _visionzip_frame(seed: int) -> torch.Tensor:
    """16 tokens, d = 8: four tokens every token attends to most, and two clusters of the rest."""
    g = _gen(seed)
    u, v1, v2 = torch.eye(8)[:3]
    x = 0.1 * torch.randn(16, 8, generator=g)
    x[DOMINANT] += 6 * u + 3 * v1 + 3 * v2
    x[GROUP_A] += 0.5 * u + 3 * v1
    x[GROUP_B] += 0.5 * u + 3 * v2
    return x


def test_visionzip_keeps_the_dominant_tokens_and_writes_group_means_on_the_centres():
    grid = torch.stack([_visionzip_frame(3), _visionzip_frame(4)])
    attn = received_attention(grid)
    for t in range(2):
        assert set(attn[t].topk(4).indices.tolist()) == set(DOMINANT)
    method = VisionZip(keep_ratio=12 / 32, contextual_share=1 / 3)  # 6 per frame: 4 dominant + 2 contextual
    sel = method.select_visual(grid, (4, 4))
    expected = torch.zeros(2, 16, dtype=torch.bool)
    expected[:, DOMINANT + [1, 8]] = True
    assert torch.equal(sel.keep, expected)
    out = sel.transform(grid)
    assert out.shape == grid.shape
    for t in range(2):
        torch.testing.assert_close(out[t, 1], grid[t, GROUP_A].mean(0))
        torch.testing.assert_close(out[t, 8], grid[t, GROUP_B].mean(0))
        torch.testing.assert_close(out[t, DOMINANT], grid[t, DOMINANT])
    # the same merge applies to any grid of the same layout (e.g. deepstack features)
    other = torch.randn(2, 16, 3, generator=_gen(5))
    out = sel.transform(other)
    torch.testing.assert_close(out[:, 1], other[:, GROUP_A].mean(1))
    torch.testing.assert_close(out[:, 8], other[:, GROUP_B].mean(1))
    dropped = ~sel.keep
    torch.testing.assert_close(out[dropped], other[dropped])


def test_visionzip_transform_equals_group_means_by_hand():
    grid = torch.randn(3, 12, 6, generator=_gen(6))
    keep, assign = dominant_contextual_keep(grid, [6, 5, 5], 0.4)
    assert keep.sum(1).tolist() == [6, 5, 5]
    sel = VisionZip(keep_ratio=16 / 36, contextual_share=0.4).select_visual(grid, (3, 4))
    assert torch.equal(sel.keep, keep)
    out, flat = sel.transform(grid).view(36, 6), grid.view(36, 6)
    for rep in keep.view(-1).nonzero().flatten().tolist():
        members = (assign == rep).nonzero().flatten()
        assert rep in members.tolist()
        torch.testing.assert_close(out[rep], flat[members].mean(0))


# --- (b) FastVID -------------------------------------------------------------------------------

def _two_scene_video(f: int = 16, d: int = 32, noise: float = 0.01) -> torch.Tensor:
    """Frames 0-3 repeat scene A, frames 4-7 scene B, each frame with a little noise."""
    g = _gen(7)
    scene_a, scene_b = torch.randn(f, d, generator=g), torch.randn(f, d, generator=g)
    frames = [scene_a] * 4 + [scene_b] * 4
    return torch.stack([s + noise * torch.randn(f, d, generator=g) for s in frames])


def test_fastvid_cuts_at_the_scene_change():
    video = _two_scene_video()
    means = video.mean(1)
    assert segment_lengths(means, min_segments=1, threshold=0.9) == [4, 4]
    assert segment_lengths(means, min_segments=2, threshold=0.9) == [4, 4]  # the forced cut is the same one
    assert len(segment_lengths(means, min_segments=4, threshold=0.9)) == 4
    assert segment_lengths(means, min_segments=8, threshold=0.9) == [1] * 8
    assert segment_lengths(means, min_segments=50, threshold=-1.0) == [1] * 8  # short videos: T segments
    assert segment_lengths(means[:1], min_segments=8) == [1]


def test_fastvid_merges_near_duplicates_into_the_anchor_frame_of_each_scene():
    video = _two_scene_video()
    f = video.shape[1]
    # all contextual (no salient tokens), 2 frames' worth of tokens, one anchor frame per segment
    method = FastVID(keep_ratio=2 / 8, min_segments=1, contextual_share=1.0, anchor_stride=8)
    sel = method.select_visual(video, (4, 4))
    expected = torch.zeros(8, f, dtype=torch.bool)
    expected[[3, 7]] = True  # the last frame of each scene is its anchor frame and keeps every token
    assert torch.equal(sel.keep, expected)
    out = sel.transform(video)
    beta = method.config.anchor_weight
    for anchor, frames in ((3, [0, 1, 2, 3]), (7, [4, 5, 6, 7])):
        group_mean = video[frames].mean(0)  # token i of every frame of the scene joins anchor token i
        w = max(1 / (len(frames) + 1), beta)
        torch.testing.assert_close(out[anchor], w * video[anchor] + (1 - w) * group_mean)
    # exact duplicates: the anchor keeps its value, whatever the weight
    dup = video[[0, 0, 0, 0, 4, 4, 4, 4]]
    out = FastVID(keep_ratio=2 / 8, min_segments=1, contextual_share=1.0, anchor_stride=8, anchor_weight=0.0)
    sel = out.select_visual(dup, (4, 4))
    assert torch.equal(sel.keep, expected)
    torch.testing.assert_close(sel.transform(dup)[[3, 7]], dup[[3, 7]])


def test_fastvid_with_no_cut_spills_the_pool_to_other_frames():
    video = _two_scene_video()
    res = density_pruning_keep(video, 2 * 16, [8], contextual_share=1.0, anchor_stride=8)
    # without the cut, one anchor frame (7) cannot hold the pool: the rest spreads evenly over the others
    assert res.keep.sum(1).tolist() == [3, 3, 2, 2, 2, 2, 2, 16]
    assert anchor_frames(8, 4) == [3, 7] and anchor_frames(3, 4) == [2] and anchor_frames(5, 2) == [0, 2, 4]
    assert capped_split(10, [2, 5, 5]) == [2, 4, 4] and capped_split(3, [0, 1, 5]) == [0, 1, 2]
    assert capped_split(9, [2, 3]) == [2, 3]


def test_density_peaks_pick_one_centre_per_cluster():
    g = _gen(8)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes, spreads = [12, 6, 6], [0.05, 0.5, 0.5]  # the first cluster is by far the densest
    x = torch.cat([c + s * torch.randn(n, 2, generator=g) for c, n, s in zip(centres, sizes, spreads)])
    labels = torch.arange(3).repeat_interleave(torch.tensor(sizes))
    scores = density_peak_scores(x[None], knn=4)[0]
    assert sorted(labels[scores.topk(3).indices].tolist()) == [0, 1, 2]
    # invalid tokens score -inf and do not shape the others
    valid = torch.ones(1, x.shape[0], dtype=torch.bool)
    valid[0, 12:18] = False
    masked = density_peak_scores(x[None], valid, knn=4)[0]
    assert torch.isinf(masked[12:18]).all() and sorted(labels[masked.topk(2).indices].tolist()) == [0, 2]


def test_fastvid_salient_tokens_are_the_most_attended_and_stay_unchanged():
    grid = torch.stack([_visionzip_frame(9), _visionzip_frame(10)])
    sel = FastVID(keep_ratio=8 / 32, contextual_share=0.0).select_visual(grid, (4, 4))
    expected = torch.zeros(2, 16, dtype=torch.bool)
    expected[:, DOMINANT] = True
    assert torch.equal(sel.keep, expected)
    torch.testing.assert_close(sel.transform(grid), grid)  # nothing merged: salient tokens are kept as they are


def test_fastvid_transform_equals_the_documented_merge_by_hand():
    grid = torch.randn(6, 9, 5, generator=_gen(11))
    beta = 0.6
    res = density_pruning_keep(grid, 20, [2, 4], contextual_share=0.5, anchor_stride=2)
    assert int(res.keep.sum()) == 20 and not (res.salient & res.anchors).any()
    out, flat = merge_onto_representatives(grid, res.assign, anchor_weight=beta).view(54, 5), grid.view(54, 5)
    segment = torch.tensor([0, 0, 1, 1, 1, 1])
    for rep in res.keep.view(-1).nonzero().flatten().tolist():
        members = (res.assign == rep).nonzero().flatten()
        if res.salient.view(-1)[rep]:
            assert members.tolist() == [rep]
        assert (segment[members // 9] == segment[rep // 9]).all()  # merges stay inside the segment
        w = max(1 / (len(members) + 1), beta)
        torch.testing.assert_close(out[rep], w * flat[rep] + (1 - w) * flat[members].mean(0))
    # every non-salient token of a segment with anchors is merged somewhere
    assert (res.assign >= 0).all()


def test_transforms_keep_the_grid_dtype():
    grid = torch.randn(4, 9, 8, generator=_gen(12)).to(torch.bfloat16)
    for cls in (VisionZip, FastVID):
        sel = cls(keep_ratio=0.3).select_visual(grid, (3, 3))
        out = sel.transform(grid)
        assert out.dtype == torch.bfloat16 and out.shape == grid.shape


# --- (d) config validation -----------------------------------------------------------------------

@pytest.mark.parametrize("cls,settings,message", [
    (DivPrune, {"keep_ratio": 0.0}, "keep_ratio"),
    (DivPrune, {"scope": "clip"}, "scope must be one of video, frame, got 'clip'"),
    (VisionZip, {"keep_ratio": 1.5}, "keep_ratio"),
    (VisionZip, {"contextual_share": 1.5}, r"contextual_share must be a number in \[0, 1\], got 1.5"),
    (VisionZip, {"contextual_share": True}, "contextual_share"),
    (VisionZip, {"contextual_share": "0.1"}, "contextual_share"),
    (FastVID, {"min_segments": 0}, "min_segments must be an integer >= 1, got 0"),
    (FastVID, {"min_segments": 2.0}, "min_segments must be an integer >= 1"),
    (FastVID, {"cut_threshold": 1.5}, r"cut_threshold must be a number in \[-1, 1\], got 1.5"),
    (FastVID, {"contextual_share": -0.1}, "contextual_share"),
    (FastVID, {"anchor_stride": 0}, "anchor_stride must be an integer >= 1, got 0"),
    (FastVID, {"anchor_weight": 1.2}, "anchor_weight"),
    (FastVID, {"knn": 0}, "knn must be an integer >= 1, got 0"),
    (FastVID, {"positions": "shifted"}, "positions"),
])
def test_config_validation(cls, settings, message):
    with pytest.raises(ValueError, match=message):
        cls(**settings)


def test_names_defaults_and_docstrings():
    assert (DivPrune.name, VisionZip.name, FastVID.name) == ("divprune", "visionzip", "fastvid")
    assert DivPrune().config.to_dict() == {"keep_ratio": 0.3, "positions": "original", "scope": "video"}
    assert VisionZip().config.contextual_share == 10 / 64
    c = FastVID().config
    assert (c.min_segments, c.cut_threshold, c.contextual_share, c.anchor_stride, c.anchor_weight, c.knn) == (8, 0.9, 0.4, 4, 0.6, 4)
    for cls in (DivPrune, VisionZip, FastVID):
        doc = cls.__doc__ or ""
        assert "attention" in doc and "budget_total" in doc and len(doc.split()) > 80


# --- end to end on the tiny models ---------------------------------------------------------------

@pytest.mark.parametrize("cls", [DivPrune, VisionZip, FastVID], ids=lambda c: c.name)
def test_end_to_end_equals_the_hand_pruned_reference(family, cls):
    inputs = family.inputs()
    method = cls(keep_ratio=0.3)
    red = stage1_by_hand(family, inputs, with_encoder_attention(family, inputs, method))
    n_frames, f = red.keep.shape
    assert int(red.keep.sum()) == budget_total(0.3, n_frames, f)
    ref, _, _ = run_layers(family, red, [], None)
    with method(family.model) as handle, torch.no_grad():
        logits = family.model(**inputs).logits
        gen = family.model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    assert handle.stats.visual_tokens_kept == int(red.keep.sum())
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-4)
    assert gen.shape[1] == inputs["input_ids"].shape[1] + 2
