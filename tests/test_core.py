"""Properties of the functional core (no transformers involved)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sharpv.core import (
    dissimilarity,
    frame_keep_ratios,
    select_adaptive,
    select_budget,
    select_tokens,
    shorten,
    spatial_importance,
    take,
    temporal_importance,
    token_scores,
)
from sharpv.core.selection import budget_total

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def videos(draw, max_frames=6, max_tokens=12, max_dim=8):
    t = draw(st.integers(1, max_frames))
    f = draw(st.integers(1, max_tokens))
    d = draw(st.integers(1, max_dim))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["noise", "static", "zeros", "constant", "mixed"]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, f, d, generator=g)
    if kind == "static":
        x = x[:1].expand(t, f, d).clone()
    elif kind == "zeros":
        x = torch.zeros(t, f, d)
    elif kind == "constant":
        x = torch.ones(t, f, d)
    elif kind == "mixed":
        x[:, : f // 2] = 0.0
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
    return x.to(dtype)


def test_dissimilarity_matches_definition():
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert torch.allclose(dissimilarity(a, b), torch.sqrt(2 - 2 * cos), atol=1e-5)
    assert torch.allclose(dissimilarity(a, a), torch.zeros(5), atol=1e-6)
    assert torch.allclose(dissimilarity(a, -a), torch.full((5,), 2.0), atol=1e-5)


def test_dissimilarity_zero_vectors_have_no_nan():
    z = torch.zeros(3, 4)
    assert torch.equal(dissimilarity(z, z), torch.zeros(3))
    assert torch.allclose(dissimilarity(z, torch.randn(3, 4)), torch.ones(3))


def test_scores_follow_the_spec_by_hand():
    x = torch.randn(3, 4, 5)
    unit = lambda v: v / v.norm(dim=-1, keepdim=True)  # noqa: E731
    spatial = (unit(x) - unit(x.mean(1, keepdim=True))).norm(dim=-1)
    temporal = (unit(x[1:]) - unit(x[:-1])).norm(dim=-1)
    assert torch.allclose(spatial_importance(x), spatial, atol=1e-5)
    assert torch.allclose(temporal_importance(x), temporal, atol=1e-5)
    expected = spatial * 0.5
    expected[0] = spatial[0]
    expected[1:] += temporal
    assert torch.allclose(token_scores(x, spatial_weight=0.5), expected, atol=1e-5)
    ratios = frame_keep_ratios(x)
    assert math.isclose(ratios[0].item(), spatial[0].norm().item() / (2 * math.sqrt(4)), rel_tol=1e-5)
    assert math.isclose(ratios[2].item(), temporal[1].norm().item() / (2 * math.sqrt(4)), rel_tol=1e-5)


@SETTINGS
@given(videos(), st.integers(0, 4), st.floats(0.1, 3.0))
def test_adaptive_counts_within_bounds_and_no_nan(x, min_tokens, scale):
    sel = select_tokens(x, min_tokens_per_frame=min_tokens, ratio_scale=scale)
    f = x.shape[1]
    assert not torch.isnan(sel.scores).any() and not torch.isnan(sel.ratios).any()
    assert ((sel.ratios >= 0) & (sel.ratios <= 1)).all()
    assert (sel.counts >= min(min_tokens, f)).all() and (sel.counts <= f).all()
    expected = torch.round((sel.ratios).clamp(max=1) * f).long().clamp(min(min_tokens, f), f)
    if int(expected.sum()) == 0:  # the video floor: the largest-ratio frame keeps its best token
        expected[int(torch.sort(sel.ratios, descending=True, stable=True).indices[0])] = 1
    assert torch.equal(sel.counts, expected)
    assert sel.total >= 1


@SETTINGS
@given(videos(), st.floats(0.01, 1.0), st.integers(0, 3))
def test_budget_hits_total_exactly(x, ratio, min_tokens):
    t, f = x.shape[:2]
    sel = select_tokens(x, keep_ratio=ratio, min_tokens_per_frame=min_tokens)
    total = budget_total(ratio, t, f)
    assert total == max(1, round(ratio * t * f))
    assert sel.total == total
    floor = min(min_tokens, total // t, f)
    assert (sel.counts >= floor).all() and (sel.counts <= f).all()


@SETTINGS
@given(videos())
def test_selection_is_deterministic_and_keeps_the_best(x):
    a = select_tokens(x)
    b = select_tokens(x.clone())
    assert torch.equal(a.keep, b.keep)
    # every kept token scores at least as high as every dropped token of its frame
    for t in range(x.shape[0]):
        kept, dropped = a.scores[t][a.keep[t]], a.scores[t][~a.keep[t]]
        if kept.numel() and dropped.numel():
            assert kept.min() >= dropped.max()


def test_ties_keep_earlier_tokens():
    scores = torch.zeros(1, 6)
    keep = select_adaptive(scores, torch.tensor([0.5]), min_tokens=0)
    assert keep.tolist() == [[True, True, True, False, False, False]]


def test_static_video_keeps_minimum_after_first_frame_noise_keeps_far_more():
    g = torch.Generator().manual_seed(0)
    frame = torch.randn(1, 196, 64, generator=g)
    static = select_tokens(frame.expand(16, -1, -1).clone(), min_tokens_per_frame=2)
    assert static.counts[1:].tolist() == [2] * 15
    noise = select_tokens(torch.randn(16, 196, 64, generator=g), min_tokens_per_frame=2)
    assert noise.counts[1:].min() > 50
    assert noise.total > 5 * static.total


def test_single_frame_works():
    x = torch.randn(1, 10, 4)
    assert select_tokens(x).keep.shape == (1, 10)
    assert select_tokens(x, keep_ratio=0.3).total == 3


def test_budget_split_is_adaptive():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 50, 16, generator=g).repeat(6, 1, 1)
    x[3] = torch.randn(50, 16, generator=g)  # one scene change
    sel = select_tokens(x, keep_ratio=0.3)
    assert sel.total == 90
    assert sel.counts[3] == sel.counts[1:].max() and sel.counts[3] > sel.counts[2]


def test_budget_scale_search_starts_from_ratios():
    scores = torch.arange(20.0).view(2, 10)
    keep = select_budget(scores, torch.tensor([0.1, 0.4]), total=10, min_tokens=1)
    assert keep.sum() == 10
    assert keep[1].sum() > keep[0].sum()


def test_budget_total_has_a_floor_of_one_token_per_video():
    assert budget_total(0.001, 8, 16) == 1  # 0.128 tokens: the video would vanish without the floor
    assert budget_total(0.5 / 128, 8, 16) == 1  # exactly half a token: round() gives 0, the floor 1
    assert budget_total(1.5 / 128, 8, 16) == 2
    assert budget_total(0.3, 8, 16) == round(0.3 * 128) == 38  # above the floor: the plain share
    assert budget_total(1.0, 3, 5) == 15 and budget_total(1e-9, 1, 1) == 1
    for ratio in (0.0, -0.1, 1.5, None, True):
        with pytest.raises(ValueError, match="keep_ratio"):
            budget_total(ratio, 8, 16)
    with pytest.raises(ValueError, match="n_frames"):
        budget_total(0.5, 0, 16)
    with pytest.raises(ValueError, match="tokens_per_frame"):
        budget_total(0.5, 8, 2.0)
    with pytest.raises(ValueError, match="keep_ratio"):  # the old argument order fails loudly
        budget_total(9, 8, 0.5)


@pytest.mark.parametrize("t,f,d", [(1, 1, 1), (1, 4, 3), (3, 5, 2), (8, 16, 4), (16, 9, 8)])
@pytest.mark.parametrize("min_tokens", [0, 1, 3])
def test_tiny_budget_never_drops_the_whole_video(t, f, d, min_tokens):
    x = torch.randn(t, f, d, generator=torch.Generator().manual_seed(t * 100 + f))
    for ratio in (0.001, 1e-6, 0.5 / (t * f)):
        assert select_tokens(x, keep_ratio=ratio, min_tokens_per_frame=min_tokens).total == 1
    for ratio in (0.05, 0.3, 1.0):
        assert select_tokens(x, keep_ratio=ratio, min_tokens_per_frame=min_tokens).total == budget_total(ratio, t, f)


def test_adaptive_mode_keeps_one_token_when_every_frame_rounds_to_zero():
    x = torch.ones(4, 6, 3)  # constant: every spatial and temporal score is 0, every ratio 0
    sel = select_tokens(x, min_tokens_per_frame=0)
    assert sel.total == 1 and sel.keep[0, 0]  # ties: the earliest frame, its earliest token
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    keep = select_adaptive(scores, torch.tensor([0.1, 0.15]), min_tokens=0)  # 0.3 and 0.45 tokens
    assert keep.tolist() == [[False, False, False], [False, True, False]]  # largest ratio, its best token


# --- budget mode's top-up: frames compared on the split's own scale ---------------------------


def _frame_scores(low: bool, f: int) -> torch.Tensor:
    """Distinct scores per token: frame 1's raw scale ([0, 2]) when ``low``, else a later frame's."""
    base = torch.linspace(0.1, 0.4, f) if low else torch.linspace(3.0, 3.9, f)
    return base.flip(0)  # best token first


def test_budget_top_up_goes_to_the_largest_remainders_not_raw_scores_or_frame_order():
    # f = 10. Frames 1, 3 and 4 share the ratio 0.23 (target 2.3 K), frame 2 has 0.12 (1.2 K).
    # At K -> 2.5 / 2.3 = 1.087 frames 1, 3 and 4 round up together: the count jumps from
    # 2 + 1 + 2 + 2 = 7 to 10, so a budget of 9 stops at 7 and must top up 2 tokens. Remainders at
    # that K: frames 1, 3, 4 -> 0.5 (tied), frame 2 -> 0.30. Largest remainder: frames 1 and 3.
    # Raw scores would give the two tokens to frames 2-4 (frame 1 scores lowest); frame order would
    # give them to frames 1 and 2.
    f = 10
    scores = torch.stack([_frame_scores(True, f), _frame_scores(False, f), _frame_scores(False, f),
                          _frame_scores(False, f)])
    ratios = torch.tensor([0.23, 0.12, 0.23, 0.23])
    keep = select_budget(scores, ratios, total=9, min_tokens=1)
    assert int(keep.sum()) == 9
    assert keep.sum(1).tolist() == [3, 1, 3, 2]
    # within a frame, the extra token is the frame's next-best by its own score
    assert keep[0].tolist() == [True] * 3 + [False] * 7
    assert keep[2].tolist() == [True] * 3 + [False] * 7


def test_budget_top_up_gives_frame_one_its_token_despite_its_low_raw_scores():
    # Frames 1 and 3 share the ratio 0.23, frame 2 has 0.12: at K = 2.5 / 2.3 the count jumps from
    # 2 + 1 + 2 = 5 to 7; a budget of 6 tops up one token. Frame 1 (tied largest remainder, first
    # in frame order) gets it although every one of its raw scores is below every other frame's.
    f = 10
    scores = torch.stack([_frame_scores(True, f), _frame_scores(False, f), _frame_scores(False, f)])
    keep = select_budget(scores, torch.tensor([0.23, 0.12, 0.23]), total=6, min_tokens=1)
    assert keep.sum(1).tolist() == [3, 1, 2]
    assert keep[0, :3].all()


def test_budget_top_up_goes_round_by_round_and_never_above_f():
    # All ratios 0 (a constant video): no K helps, so the whole budget is top-up. One token per
    # frame per round, ties by frame order: 7 tokens over 3 frames of 4 -> 3, 2, 2.
    scores = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    keep = select_budget(scores, torch.zeros(3), total=7, min_tokens=0)
    assert keep.sum(1).tolist() == [3, 2, 2]
    # Frame 2 is full (ratio 1): rounds skip it. 10 of 12 -> frame 2 has 4, the rest 3 each.
    keep = select_budget(scores, torch.tensor([0.0, 1.0, 0.0]), total=10, min_tokens=0)
    assert keep.sum(1).tolist() == [3, 4, 3]
    keep = select_budget(scores, torch.zeros(3), total=12, min_tokens=0)
    assert keep.all()


def test_vidcom2_style_weights_use_the_same_top_up():
    # Equal weights (softmax of equal uniqueness) make every frame round up together: the top-up
    # spreads the remainder one token per frame in frame order, whatever the raw scores.
    scores = torch.stack([_frame_scores(True, 6), _frame_scores(False, 6), _frame_scores(False, 6)])
    keep = select_budget(scores, torch.full((3,), 1 / 3), total=8, min_tokens=1)
    assert keep.sum(1).tolist() == [3, 3, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    x = torch.randn(8, 196, 32)
    assert torch.equal(select_tokens(x.cuda().half()).keep.cpu(), select_tokens(x.half()).keep)


def test_shorten_left_pads_and_keeps_order():
    keep = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    plan = shorten(keep)
    x = torch.arange(8).view(2, 4)
    assert take(x, plan, fill=-1).tolist() == [[0, 2, 3], [-1, -1, 5]]
    assert plan.valid.tolist() == [[True, True, True], [False, False, True]]
    feats = torch.arange(16.0).view(2, 4, 2)
    assert take(feats, plan).tolist() == [[[0, 1], [4, 5], [6, 7]], [[0, 0], [0, 0], [10, 11]]]
