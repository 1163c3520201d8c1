"""Stage 1 chunk by chunk (adaptive mode) equals stage 1 on the whole video, exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sharpv.core import select_tokens
from sharpv.core.streaming import StreamingSelector


def video(frames: int, tokens: int, dim: int, seed: int, static: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, tokens, dim, generator=g).expand(frames, -1, -1)
    return base + static * torch.randn(frames, tokens, dim, generator=g)


def stream(features: torch.Tensor, cuts: list[int], **settings) -> tuple[torch.Tensor, StreamingSelector]:
    selector = StreamingSelector(**settings)
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < features.shape[0])), features.shape[0]]
    keeps = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = selector.push(features[a:b])
        assert part.first_frame == a
        keeps.append(part.keep)
    return torch.cat(keeps), selector


@settings(max_examples=60, deadline=None)
@given(
    frames=st.integers(1, 12), tokens=st.integers(1, 20), seed=st.integers(0, 10_000),
    static=st.sampled_from([0.0, 0.05, 0.3, 2.0]), cuts=st.lists(st.integers(1, 11), max_size=5),
    weight=st.sampled_from([0.0, 1.0, 2.5]), scale=st.sampled_from([1.0, 1.6, 0.3]), floor=st.integers(0, 2),
)
def test_chunked_selection_equals_one_shot(frames, tokens, seed, static, cuts, weight, scale, floor):
    features = video(frames, tokens, 8, seed, static)
    want = select_tokens(features, spatial_weight=weight, ratio_scale=scale, min_tokens_per_frame=floor)
    got, selector = stream(features, cuts, spatial_weight=weight, ratio_scale=scale, min_tokens_per_frame=floor)
    extra = selector.finish()
    if extra is not None:
        got[extra.frame, extra.token] = True
        assert torch.equal(extra.feature, features[extra.frame, extra.token])
    assert torch.equal(got, want.keep)


def test_the_video_floor_is_decided_at_the_end_not_per_chunk():
    # a static video: every frame after the first rounds to zero; the first frame does not
    features = video(6, 16, 8, 0, 0.0)
    first = StreamingSelector(min_tokens_per_frame=0)
    kept_first = first.push(features[:1]).keep.sum()
    later = [int(first.push(features[i : i + 1]).keep.sum()) for i in range(1, 6)]
    assert later == [0] * 5  # a chunk that rounds to zero alone gets no floor token
    assert first.finish() is None or kept_first == 0


def test_chunks_must_keep_their_shape():
    selector = StreamingSelector()
    selector.push(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="tokens x channels"):
        selector.push(torch.randn(2, 5, 8))
