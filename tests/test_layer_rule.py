"""Stage 2's default rule (``kv_granularity="layer"``) with thresholds that single out one layer.

The rule: the visual tokens' KV goes at every layer ``l >= kv_min_layer`` (withdraw: from the first
such layer on) whose MEAN cosine ``s_l`` between the visual tokens' hidden states and their own
input embeddings is below M. Other tests use M = 2 (every layer fires) or M = -1 (none does), and
those cannot tell this rule from a mean over all tokens, from the per-token rule, or from a wrong
layer. Here every family reads its ``s_l`` once (M = -1), checks them against a hand computation
(mean cosine over the VISUAL tokens only, hidden states from the layer-by-layer reference), then
puts M in every clear gap between two layers' similarities, so that one specific layer L is the
first allowed one to fire (a later one than the earliest allowed wherever the model allows it), and
checks the withdraw layer, the per-layer cache lengths and the reported similarities against the
expectation written out here and against the reference's own decision. The thresholds follow the
measured ``s_l``, so the test holds whether or not ``s_l`` falls monotonically.
"""

from __future__ import annotations

import pytest
import torch

import sharpv
from sharpv import SharpVConfig
from sharpv.adapters import adapter_for

from reference import run_layers, stage1_by_hand

KEEP_RATIO = 0.5
MIN_GAP = 1e-3  # two layers' similarities this far apart are told apart far above float noise
ATOL = 1e-5


def _config(mode: str, min_layer: int, threshold: float) -> SharpVConfig:
    return SharpVConfig(keep_ratio=KEEP_RATIO, kv_threshold=threshold, kv_mode=mode, kv_granularity="layer",
                        kv_min_layer=min_layer)


def hidden_entering_layers(family, red) -> list[torch.Tensor]:
    """The hidden states (1, n, d) entering every layer of the reference's layer-by-layer run of
    the stage-1 prompt (no stage 2), caught with pre-hooks on the decoder layers."""
    layers = family.model.model.language_model.layers
    entering: dict[int, torch.Tensor] = {}

    def grab(i):
        def hook(module, args, kwargs):
            entering[i] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        return hook

    hooks = [layer.register_forward_pre_hook(grab(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        run_layers(family, red, [], None)
    finally:
        for h in hooks:
            h.remove()
    return [entering[i] for i in range(len(layers))]


def mean_cosine(hidden: torch.Tensor, embeds: torch.Tensor) -> float:
    h, e = hidden.float(), embeds.float()
    return float(((h * e).sum(-1) / (h.norm(dim=-1) * e.norm(dim=-1)).clamp_min(1e-6)).mean())


def hand_similarities(family, red) -> list[float]:
    """``s_l`` by hand: cosine of each visual token's hidden state entering layer l to its own input
    embedding, averaged over the VISUAL tokens only."""
    return [mean_cosine(h[0, red.visual], red.embeds[0, red.visual]) for h in hidden_entering_layers(family, red)]


def earliest_layer(family, mode: str, min_layer: int) -> int:
    """The first layer the rule may fire at: kv_min_layer, and in withdraw mode never before the
    model's own floor (Qwen3-VL: after its deepstack layers)."""
    floor = adapter_for(family.model).min_withdraw_layer() if mode == "withdraw" else 1
    return max(min_layer, floor)


def threshold_cases(sims: list[float], first: int) -> list[tuple[float, int | None]]:
    """(M, L) pairs: M midway between two layers' similarities that lie at least MIN_GAP apart
    (so no layer sits near M), and L the first allowed layer (>= ``first``) with ``s_L < M``, or
    None if no allowed layer is below M. This covers, depending on the model: a later layer than
    the earliest allowed one, the earliest one, an M above layers that are not allowed to fire,
    and, if ``s_l`` is not monotone, layers after L that stay above M."""
    levels = sorted(sims)
    cases = []
    for low, high in zip(levels, levels[1:]):
        if high - low >= MIN_GAP:
            threshold = (low + high) / 2
            cases.append((threshold, next((l for l in range(first, len(sims)) if sims[l] < threshold), None)))
    return cases


@pytest.mark.parametrize("min_layer", [1, 2])
@pytest.mark.parametrize("mode", ["withdraw", "layerwise"])
def test_layer_rule_fires_exactly_at_the_layer_the_threshold_picks(family, mode, min_layer):
    inputs = family.inputs()
    n_layers = family.model.config.get_text_config().num_hidden_layers
    red = stage1_by_hand(family, inputs, _config(mode, min_layer, -1.0))
    n, n_vis = red.ids.shape[1], int(red.visual.sum())
    assert 0 < n_vis < n

    # s_l as reported (M = -1: nothing is pruned, every layer is measured) and by hand
    with sharpv.apply(family.model, _config(mode, min_layer, -1.0)) as handle, torch.no_grad():
        family.model(**inputs)
    assert handle.stats.kv_withdraw_layer is None
    assert handle.stats.kv_cache_lengths == [n] * n_layers
    sims = hand_similarities(family, red)
    assert handle.stats.layer_similarity == pytest.approx(sims, abs=ATOL)
    assert sims[0] == pytest.approx(1.0, abs=ATOL)

    first = earliest_layer(family, mode, min_layer)
    cases = threshold_cases(sims, first)
    # The tiny models' similarities must differ enough between layers for a threshold to single
    # out a layer after the earliest allowed one, wherever at least three layers may fire. (With
    # only the last two allowed, e.g. Qwen3-VL withdrawing after its deepstack layers, they may be
    # too close or in the wrong order; then the earliest allowed layer is what M can pick.)
    if n_layers - first >= 3:
        assert any(layer is not None and layer > first for _, layer in cases), f"no layer after {first} stands out: {sims}"
    assert any(layer is not None for _, layer in cases), sims

    for threshold, layer in cases:
        config = _config(mode, min_layer, threshold)
        if layer is None:
            pruned = set()
        elif mode == "withdraw":
            assert sims[layer] < threshold <= min(sims[first:layer], default=2.0)
            pruned = set(range(layer, n_layers))
        else:
            pruned = {l for l in range(first, n_layers) if sims[l] < threshold}
            assert min(pruned) == layer
        expected_lengths = [n - n_vis if l in pruned else n for l in range(n_layers)]
        with sharpv.apply(family.model, config) as handle, torch.no_grad():
            logits = family.model(**inputs).logits
        stats = handle.stats
        where = f"{family.arch} {mode} kv_min_layer={min_layer} M={threshold:.4f} L={layer} s={sims}"
        assert stats.kv_withdraw_layer == layer, where
        assert stats.kv_cache_lengths == expected_lengths, where
        # after a withdrawal nothing visual is left to measure; otherwise every layer is measured
        measured = sims[: layer + 1] if mode == "withdraw" and layer is not None else sims
        assert stats.layer_similarity == pytest.approx(measured, abs=ATOL), where
        # the reference decides from its own hidden states, with the visual-only mean
        ref, hidden_keys, _ = run_layers(family, red, [], config)
        assert [int(h[:n].sum()) for h in hidden_keys] == [n - length for length in expected_lengths], where
        torch.testing.assert_close(logits[0, -1], ref[0, -1], atol=ATOL, rtol=1e-4)


def test_layer_rule_ignores_text_tokens_in_the_mean(family):
    """The layer similarity is the mean over the visual tokens: text tokens, whose hidden states
    also drift from their embeddings, must not move it."""
    inputs = family.inputs()
    red = stage1_by_hand(family, inputs, _config("layerwise", 1, -1.0))
    entering = hidden_entering_layers(family, red)
    sims = [mean_cosine(h[0, red.visual], red.embeds[0, red.visual]) for h in entering]
    all_tokens = [mean_cosine(h[0], red.embeds[0]) for h in entering]
    # the two averages differ on these models (so a mean over all tokens would be caught) ...
    assert max(abs(a - b) for a, b in zip(sims[1:], all_tokens[1:])) > 10 * ATOL
    # ... and the reported one is the visual-only mean
    with sharpv.apply(family.model, _config("layerwise", 1, -1.0)) as handle, torch.no_grad():
        family.model(**inputs)
    assert handle.stats.layer_similarity == pytest.approx(sims, abs=ATOL)
