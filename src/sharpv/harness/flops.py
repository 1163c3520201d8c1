"""Analytic LLM prefill FLOPs of a pruned call, and their share of the dense call's.

Per decoder layer l holding ``n_l`` tokens (the tokens it computes: the stage-1 length, or fewer
after an in-LLM withdrawal): ``2·n_l·(d·q + 2·d·kv + q·d + 3·d·ff)`` for the projections and the
gated MLP, plus ``4·q·n_l(n_l+1)/2`` for causal attention (QK^T and AV), with q = heads·head_dim and
kv = kv_heads·head_dim; plus ``2·d·vocab`` for the last token's logits, plus FastV's extra score
pass ``2·n·d·kv + 2·d·q + 2·q·n`` at layer K-1 (PyramidDrop's one-query maps are a few thousand
FLOPs and are left out). The vision tower is not counted: every method runs it whole.

``sharpv bench`` reports :func:`prefill_flops` per run; ``sharpv eval`` sums
:func:`prefill_flops_pair` over its items and reports the ratio (``flops_share``), so that an in-LLM method's accuracy is read next to the compute it
spends (FastV keeps every token in the first K layers).
"""

from __future__ import annotations

from typing import Any


def prefill_flops(text_config: Any, layer_lengths: list[int], extra_score_tokens: int = 0) -> int:
    """Analytic LLM prefill FLOPs (formula in the module docstring)."""
    d = text_config.hidden_size
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or d // heads
    q = heads * head_dim
    kv = text_config.num_key_value_heads * head_dim
    ff = text_config.intermediate_size
    per_token = 2 * (d * q + 2 * d * kv + q * d + 3 * d * ff)
    total = sum(n * per_token + 4 * q * n * (n + 1) // 2 for n in layer_lengths)
    total += 2 * d * text_config.vocab_size
    if extra_score_tokens:
        n = extra_score_tokens
        total += 2 * n * d * kv + 2 * d * q + 2 * q * n
    return int(total)


def computed_lengths(stats: Any, num_layers: int) -> list[int]:
    """The tokens each decoder layer computes in the prefill ``stats`` describe: the cache lengths
    when an in-LLM method withdrew tokens from the sequence, else the stage-1 length at every layer
    ("layerwise" drops only shorten the cache after a layer has computed every token)."""
    if stats.kv_mode == "withdraw" and stats.kv_cache_lengths:
        return list(stats.kv_cache_lengths)
    return [stats.sequence_length_out] * num_layers


def extra_score_tokens(stats: Any, method_name: str) -> int:
    """Tokens FastV's extra attention-score pass runs over (0 for every other method)."""
    return stats.sequence_length_out if method_name == "fastv" else 0


def prefill_flops_pair(text_config: Any, stats: Any, method_name: str) -> tuple[int, int]:
    """(pruned, dense) analytic prefill FLOPs of the call ``stats`` describe; dense is the
    unpruned prompt (``sequence_length_in`` tokens) at every layer."""
    layers = text_config.num_hidden_layers
    pruned = prefill_flops(text_config, computed_lengths(stats, layers), extra_score_tokens(stats, method_name))
    dense = prefill_flops(text_config, [stats.sequence_length_in] * layers)
    return pruned, dense


def prefill_flops_share(text_config: Any, stats: Any, method_name: str) -> float:
    """Pruned over dense analytic prefill FLOPs of one call (:func:`prefill_flops_pair`)."""
    pruned, dense = prefill_flops_pair(text_config, stats, method_name)
    return pruned / dense
