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
    assert torch.equal(sel.counts, expected)


@SETTINGS
@given(videos(), st.floats(0.01, 1.0), st.integers(0, 3))
def test_budget_hits_total_exactly(x, ratio, min_tokens):
    t, f = x.shape[:2]
    sel = select_tokens(x, keep_ratio=ratio, min_tokens_per_frame=min_tokens)
    total = round(ratio * t * f)
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
