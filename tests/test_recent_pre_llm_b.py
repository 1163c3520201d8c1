"""FlashVID and HoliTom (pre-LLM merging): exact budgets, constructed cases with known answers,
merge transforms, settings, and one end-to-end run per method and family."""

from __future__ import annotations


import pytest
import torch
from reference import run_layers, stage1_by_hand, with_encoder_attention

from sharpv.core.attention_proxy import received_attention
from sharpv.core.dpc_clustering import dpc_knn
from sharpv.core.flashvid import (
    adts_select,
    flashvid_select,
    segment_lengths,
    tree_merge_segment,
)
from sharpv.core.holitom import holitom_select, same_position_similarity, static_windows
from sharpv.core.merge_plan import MergePlan, apply_merge_plan
from sharpv.core.selection import budget_total
from sharpv.methods.flashvid import FlashVID
from sharpv.methods.holitom import HoliTom

#: (T, f, d, (h, w)) grids of tests/test_baselines.py
GRIDS = [(1, 1, 1, (1, 1)), (1, 4, 3, (2, 2)), (3, 6, 2, (2, 3)), (8, 16, 4, (4, 4)), (5, 9, 8, (3, 3))]

VARIANTS = [
    (FlashVID, {}), (FlashVID, {"alpha": 0.0}), (FlashVID, {"alpha": 1.0}), (FlashVID, {"min_segments": 1}),
    (FlashVID, {"temporal_threshold": -1.0}),
    (HoliTom, {}), (HoliTom, {"contextual_share": 0.5}), (HoliTom, {"contextual_share": 1.0}),
    (HoliTom, {"max_window": 1}), (HoliTom, {"temporal_threshold": -1.0}),
]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal_tokens(f: int, d: int, seed: int = 0) -> torch.Tensor:
    """``f`` mutually orthogonal unit tokens of width ``d`` (d >= f)."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_generator(seed)))
    return q[:f]


# --- (a) exact budget, never zero tokens ------------------------------------------------------


@pytest.mark.parametrize("cls,settings", VARIANTS, ids=[f"{c.name}-{s}" for c, s in VARIANTS])
def test_exact_budget_and_never_zero_tokens(cls, settings):
    for t, f, d, spatial in GRIDS:
        grid = torch.randn(t, f, d, generator=_generator(t * 31 + f))
        for ratio in (0.001, 1e-6, 0.05, 0.3, 0.77, 1.0):
            sel = cls(keep_ratio=ratio, **settings).select_visual(grid, spatial)
            keep = sel.keep
            assert keep.shape == (t, f) and keep.dtype == torch.bool
            want = budget_total(ratio, t, f)
            assert want == max(1, round(ratio * t * f))
            assert int(keep.sum()) == want >= 1, (cls.name, settings, t, f, ratio)
            assert sel.transform(grid).shape == grid.shape


@pytest.mark.parametrize("cls", [FlashVID, HoliTom])
def test_exact_budget_on_redundant_videos_and_full_ratio_keeps_everything_unmerged(cls):
    """Static and two-scene videos merge heavily; the budget still holds exactly, and keep_ratio=1
    keeps every token with its own value."""
    base = torch.randn(2, 1, 12, 6, generator=_generator(5))
    videos = [base[0].repeat(6, 1, 1), torch.cat([base[0].repeat(3, 1, 1), base[1].repeat(3, 1, 1)])]
    for x in videos:
        for ratio in (1e-6, 0.1, 0.25, 0.5, 0.9, 1.0):
            sel = cls(keep_ratio=ratio).select_visual(x, (3, 4))
            assert int(sel.keep.sum()) == budget_total(ratio, 6, 12), (cls.name, ratio)
        full = cls(keep_ratio=1.0).select_visual(x, (3, 4))
        assert full.keep.all()
        torch.testing.assert_close(full.transform(x), x)


# --- (b) FlashVID: constructed cases ----------------------------------------------------------


def test_flashvid_segmentation_cuts_at_the_scene_change_and_completes_to_min_segments():
    g = _generator(1)
    scene_a, scene_b = torch.randn(2, 16, generator=g)
    frames = torch.stack([scene_a] * 3 + [scene_b] * 3) + 0.01 * torch.randn(6, 16, generator=g)
    assert segment_lengths(frames, threshold=0.9, min_segments=1) == [3, 3]
    # a weaker (but above-threshold) transition after frame 1 is the next cut when more segments are needed
    frames[1:3] += 0.3 * torch.randn(16, generator=g)
    assert segment_lengths(frames, threshold=-1.0, min_segments=1) == [6]
    assert segment_lengths(frames, threshold=0.9, min_segments=3) == [1, 2, 3]
    assert segment_lengths(frames, threshold=0.9, min_segments=99) == [1] * 6
    assert segment_lengths(frames[:1], threshold=0.9, min_segments=8) == [1]


def test_adts_picks_the_diverse_tokens_and_attention_breaks_equal_distances():
    d = 8
    e = _orthogonal_tokens(4, d)
    # 6 near-copies of e0 (background) and three distinct tokens e1, e2, e3
    frame = torch.cat([e[0].repeat(6, 1) + 1e-3 * torch.randn(6, d, generator=_generator(2)), e[1:]])
    flat = torch.ones(1, 9) / 9
    keep = adts_select(frame[None], flat, torch.tensor([4]))[0]
    assert keep[6:].all() and int(keep[:6].sum()) == 1
    # the first pick is the token farthest from its nearest neighbour (not a background copy)
    lone = e[0].repeat(8, 1) + 1e-3 * torch.randn(8, d, generator=_generator(3))
    lone[5] = e[1]
    assert adts_select(lone[None], torch.ones(1, 8) / 8, torch.tensor([1]))[0].nonzero().flatten().tolist() == [5]
    # every pair equally far apart (orthogonal): the attention calibration decides, highest first
    ortho = _orthogonal_tokens(5, d, seed=3)[None]
    attention = torch.tensor([[0.1, 0.3, 0.05, 0.4, 0.15]])
    picks = [adts_select(ortho, attention, torch.tensor([k]))[0] for k in (1, 2, 3)]
    assert picks[0].nonzero().flatten().tolist() == [3]
    assert picks[1].nonzero().flatten().tolist() == [1, 3]
    assert picks[2].nonzero().flatten().tolist() == [1, 3, 4]
    # per-frame counts, frames run together
    both = adts_select(torch.cat([ortho, ortho]), torch.cat([attention, attention]), torch.tensor([2, 0]))
    assert both.sum(1).tolist() == [2, 0]


def test_tstm_collapses_a_static_video_into_frame_one_with_the_tree_mean():
    """Frames are scaled copies of frame 1 (cosine 1): every token's tree runs through its position,
    rooted in frame 1, and the root receives the mean over the frames."""
    f, d, t = 5, 8, 4
    base = _orthogonal_tokens(f, d)
    x = torch.stack([(1.0 + s) * base for s in range(t)])
    keep, plan = flashvid_select(x, total=f, alpha=0.0, min_segments=1)
    assert keep[0].all() and not keep[1:].any()
    merged = apply_merge_plan(x, plan)
    torch.testing.assert_close(merged[0], x.mean(0))
    torch.testing.assert_close(merged[1:], x[1:])  # non-kept tokens are left as they were


def test_tstm_trees_follow_moving_content_across_positions():
    """Frame t is frame 1 shifted by t positions: each tree follows its token, not its position."""
    f, d, t = 6, 8, 3
    base = _orthogonal_tokens(f, d, seed=4)
    x = torch.stack([(1.0 + s) * base.roll(s, dims=0) for s in range(t)])
    keep, plan = tree_merge_segment(x, torch.ones(t, f, dtype=torch.bool), budget=f, threshold=0.8)
    assert keep[0].all() and int(keep.sum()) == f
    merged = apply_merge_plan(x, plan)
    torch.testing.assert_close(merged[0], base * 2.0)  # mean of the scales 1, 2, 3
    # with the same-position rule the roots would not link at all: prove the links moved
    assert same_position_similarity(x).max() < 0.5


def test_tstm_spatial_merge_averages_tree_means_per_cluster_and_cuts_weak_links_for_the_budget():
    """One frame, two tight groups of tokens and a budget of two: DPC-kNN makes one cluster per
    group and each centre receives its group's mean."""
    g = _generator(6)
    a, b = _orthogonal_tokens(2, 8, seed=7) * 4
    frame = torch.cat([a + 0.05 * torch.randn(4, 8, generator=g), b + 0.05 * torch.randn(3, 8, generator=g)])
    keep, plan = tree_merge_segment(frame[None], torch.ones(1, 7, dtype=torch.bool), budget=2, threshold=0.8)
    kept = keep[0].nonzero().flatten()
    assert int((kept < 4).sum()) == 1 and int((kept >= 4).sum()) == 1
    merged = apply_merge_plan(frame[None], plan)[0]
    torch.testing.assert_close(merged[kept[0]], frame[:4].mean(0))
    torch.testing.assert_close(merged[kept[1]], frame[4:].mean(0))
    # a static video with a budget above one frame: the weakest links are cut to make more roots
    x = torch.stack([frame, frame * 2, frame * 3 + 0.2 * torch.randn(7, 8, generator=g)])
    keep, _ = tree_merge_segment(x, torch.ones(3, 7, dtype=torch.bool), budget=9, threshold=0.8)
    assert int(keep.sum()) == 9 and keep[0].all() and int(keep[1].sum()) == 0


def test_dpc_knn_finds_the_density_peaks_of_separated_groups():
    g = _generator(8)
    centres_true = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.3 * torch.randn(5, 2, generator=g) for c in centres_true])
    centres, assign = dpc_knn(points, 3, k=4)
    assert sorted((centres // 5).tolist()) == [0, 1, 2]
    assert assign.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert torch.equal(dpc_knn(points, 3, k=4)[0], centres)  # deterministic
    with pytest.raises(ValueError, match="n_clusters"):
        dpc_knn(points, 0)


def test_flashvid_transform_keeps_shape_and_puts_adts_tokens_unchanged_and_merges_on_kept():
    grid = torch.randn(6, 9, 16, generator=_generator(9))
    sel = FlashVID(keep_ratio=0.3, alpha=0.5).select_visual(grid, (3, 3))
    out = sel.transform(grid)
    assert out.shape == grid.shape and out.dtype == grid.dtype
    changed = ~torch.isclose(out, grid).all(-1)
    assert not (changed & ~sel.keep).any()  # only kept tokens receive merges
    # 16 tokens: frame shares 3, 3, 3, 3, 2, 2, of which ceil(0.5 * share) go to ADTS
    adts = adts_select(grid, received_attention(grid), torch.tensor([2, 2, 2, 2, 1, 1]))
    assert (sel.keep & adts).sum() == adts.sum() and not changed[adts].any()
    # another width (deepstack): the same plan, same shapes
    other = torch.randn(6, 9, 5, dtype=torch.float64, generator=_generator(10))
    assert sel.transform(other).shape == other.shape and sel.transform(other).dtype == torch.float64
    # the merged values are a weighted mean: weights into each destination sum to one
    _, plan = flashvid_select(grid, budget_total(0.3, 6, 9), alpha=0.5)
    sums = torch.zeros(6 * 9).index_add_(0, plan.dst, plan.weight)
    torch.testing.assert_close(sums[plan.dst.unique()], torch.ones(plan.dst.unique().numel()))


# --- (b) HoliTom: constructed cases -----------------------------------------------------------


def test_holitom_segmentation_splits_at_the_scene_cut_and_respects_max_window():
    g = _generator(11)
    a, b = torch.randn(2, 1, 10, 8, generator=g)
    x = torch.cat([a.repeat(3, 1, 1), b.repeat(3, 1, 1)]) + 0.01 * torch.randn(6, 10, 8, generator=g)
    sims = same_position_similarity(x)
    assert static_windows(sims, 0.8) == [(0, 2), (3, 5)]
    assert static_windows(sims, 0.8, max_window=2) == [(0, 1), (2, 2), (3, 4), (5, 5)]
    assert static_windows(sims, 0.8, max_window=1) == [(t, t) for t in range(6)]
    # DP over the whole video: one long window where 8 of 10 positions stay static removes 8 * 5 = 40
    # tokens; cutting after frame 3 would add the 2 positions static in frames 1-3 only (2 * 2) but
    # lose one frame of the 8 (8 * 4 + 4 = 36)
    y = a.repeat(6, 1, 1)
    y[3:, 8:] = torch.randn(3, 2, 8, generator=g)
    y[2:4, :8] *= 2.0  # same direction: stays static
    assert static_windows(same_position_similarity(y), 0.8) == [(0, 5)]
    # and the other way: 2 positions static over 4 frames (6) lose to two windows of all 10 (10 + 10)
    z = a[:, :10].repeat(4, 1, 1)
    z[2:, 2:] = torch.randn(1, 8, 8, generator=g)
    assert static_windows(same_position_similarity(z), 0.8) == [(0, 1), (2, 3)]


def test_holitom_static_video_merges_into_frame_one_with_the_mean():
    f, d, t = 6, 8, 4
    base = torch.randn(f, d, generator=_generator(12))
    x = torch.stack([(1.0 + s) * base for s in range(t)])
    keep, plan = holitom_select(x, total=f)
    assert keep[0].all() and not keep[1:].any()
    merged = apply_merge_plan(x, plan)
    torch.testing.assert_close(merged[0], x.mean(0))
    # same through the method: keep_ratio 1/T keeps one frame's worth
    sel = HoliTom(keep_ratio=1 / t).select_visual(x, (2, 3))
    assert torch.equal(sel.keep, keep)
    torch.testing.assert_close(sel.transform(x)[0], x.mean(0))


def test_holitom_two_scenes_keep_each_scene_start_with_its_own_mean():
    g = _generator(13)
    a, b = torch.randn(2, 6, 8, generator=g)
    x = torch.stack([a, 2 * a, 3 * a, b, 2 * b, 4 * b])
    sel = HoliTom(keep_ratio=2 / 6).select_visual(x, (2, 3))
    assert sel.keep[0].all() and sel.keep[3].all() and int(sel.keep.sum()) == 12
    out = sel.transform(x)
    torch.testing.assert_close(out[0], 2 * a)
    torch.testing.assert_close(out[3], 7 / 3 * b)


def test_holitom_spatial_merge_beta_weights_and_attention_dominant_tokens():
    g = _generator(14)
    a, b = _orthogonal_tokens(2, 8, seed=15) * 3
    frame = torch.cat([a + 0.05 * torch.randn(4, 8, generator=g), b + 0.05 * torch.randn(3, 8, generator=g)])
    # contextual only: two DPC-kNN clusters, value beta * centre + (1 - beta) * mean(others)
    keep, plan = holitom_select(frame[None], total=2, beta=0.6, contextual_share=1.0)
    kept = keep[0].nonzero().flatten()
    assert int((kept < 4).sum()) == 1 and int((kept >= 4).sum()) == 1
    out = apply_merge_plan(frame[None], plan)[0]
    for centre, group in zip(kept.tolist(), (range(4), range(4, 7))):
        others = [i for i in group if i != centre]
        torch.testing.assert_close(out[centre], 0.6 * frame[centre] + 0.4 * frame[others].mean(0))
    # dominant only (the default D = 0): the token every other token attends to most is kept as is
    v = torch.randn(8, generator=g)
    loud = v.repeat(7, 1) + 0.1 * torch.randn(7, 8, generator=g)
    loud[5] = 4 * v
    assert int(received_attention(loud).argmax()) == 5
    keep, plan = holitom_select(loud[None], total=1)
    assert keep[0].nonzero().flatten().tolist() == [5] and len(plan) == 0


def test_holitom_budget_above_the_merged_count_merges_only_the_most_static_positions():
    """With a budget larger than what full temporal merging leaves, the most static positions
    merge first, and only as many as keep the budget."""
    g = _generator(16)
    base = torch.randn(4, 8, generator=g)
    noise = torch.randn(3, 4, 8, generator=g)
    x = base + torch.tensor([0.0, 0.05, 0.1, 0.3])[None, :, None] * noise  # position 0 most static
    sims = same_position_similarity(x)
    assert (sims > 0.8).all() and (sims.min(0).values.diff() < 0).all()
    assert static_windows(sims, 0.8) == [(0, 2)]  # full merging would leave 4 tokens
    keep, plan = holitom_select(x, total=8)
    assert keep[0].all() and not keep[1:, :2].any() and keep[1:, 2:].all()
    out = apply_merge_plan(x, plan)
    torch.testing.assert_close(out[0, :2], x[:, :2].mean(0))
    torch.testing.assert_close(out[:, 2:], x[:, 2:])


def test_holitom_transform_keeps_shape_and_weights_sum_to_one():
    g = _generator(17)
    x = torch.randn(1, 12, 8, generator=g).repeat(5, 1, 1) + 0.2 * torch.randn(5, 12, 8, generator=g)
    x[2:, :5] = torch.randn(3, 5, 8, generator=g)
    sel = HoliTom(keep_ratio=0.3, contextual_share=0.5).select_visual(x, (3, 4))
    out = sel.transform(x)
    assert out.shape == x.shape
    changed = ~torch.isclose(out, x).all(-1)
    assert changed.any() and not (changed & ~sel.keep).any()
    _, plan = holitom_select(x, budget_total(0.3, 5, 12), contextual_share=0.5)
    sums = torch.zeros(5 * 12).index_add_(0, plan.dst, plan.weight)
    torch.testing.assert_close(sums[plan.dst.unique()], torch.ones(plan.dst.unique().numel()))
    assert apply_merge_plan(x, MergePlan.empty()) is x


# --- (d) settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,settings,message", [
    (FlashVID, {"alpha": 1.5}, "alpha must be a number in \\[0, 1\\], got 1.5"),
    (FlashVID, {"alpha": True}, "alpha"),
    (FlashVID, {"temporal_threshold": 2}, "temporal_threshold must be a number in \\[-1, 1\\]"),
    (FlashVID, {"segment_threshold": "0.9"}, "segment_threshold"),
    (FlashVID, {"min_segments": 0}, "min_segments must be an integer >= 1, got 0"),
    (FlashVID, {"dpc_k": 2.5}, "dpc_k must be an integer >= 1"),
    (FlashVID, {"keep_ratio": 0.0}, "keep_ratio"),
    (HoliTom, {"temporal_threshold": -1.5}, "temporal_threshold must be a number in \\[-1, 1\\]"),
    (HoliTom, {"beta": -0.1}, "beta must be a number in \\[0, 1\\]"),
    (HoliTom, {"contextual_share": 1.1}, "contextual_share"),
    (HoliTom, {"dpc_k": 0}, "dpc_k must be an integer >= 1, got 0"),
    (HoliTom, {"max_window": 0}, "max_window must be an integer >= 1, got 0"),
    (HoliTom, {"positions": "shuffled"}, "positions"),
])
def test_settings_are_validated(cls, settings, message):
    with pytest.raises(ValueError, match=message):
        cls(**settings)


def test_defaults_are_the_official_ones():
    assert FlashVID().config.to_dict() == {"keep_ratio": 0.3, "positions": "original", "alpha": 0.7,
                                          "temporal_threshold": 0.8, "segment_threshold": 0.9, "min_segments": 8,
                                          "dpc_k": 7}
    assert HoliTom().config.to_dict() == {"keep_ratio": 0.3, "positions": "original", "temporal_threshold": 0.8,
                                         "beta": 0.6, "contextual_share": 0.0, "dpc_k": 7, "max_window": 1024}
    for cls in (FlashVID, HoliTom):
        assert cls.name == cls.__name__.lower() and len(cls.__doc__.split()) > 15


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [FlashVID, HoliTom])
def test_end_to_end_equals_the_hand_pruned_reference(family, cls):
    inputs = family.inputs()
    method = cls(keep_ratio=0.3)
    merged_on_kept = []
    select = method.select_visual

    def spy(grid, spatial, attention=None):
        sel = select(grid, spatial, attention=attention)
        changed = ~torch.isclose(sel.transform(grid), grid).all(-1)
        merged_on_kept.append(int((changed & sel.keep).sum()))
        return sel

    method.select_visual = spy
    red = stage1_by_hand(family, inputs, with_encoder_attention(family, inputs, method))
    ref, _, _ = run_layers(family, red, [], None)
    with method(family.model) as handle, torch.no_grad():
        logits = family.model(**inputs).logits
        gen = family.model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    stats = handle.stats
    assert stats.visual_tokens_kept == budget_total(0.3, stats.frames, stats.tokens_per_frame) == int(red.keep.sum())
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-4)
    assert gen.shape[1] == inputs["input_ids"].shape[1] + 2
    assert min(merged_on_kept) > 0  # merged features reached the model, in both paths
