"""Hand-built references: stage 1 by hand, and the language model run layer by layer.

Nothing here goes through sharpv's runtime; only the scoring function of the core is shared.
"""

from __future__ import annotations

import copy

from dataclasses import dataclass

import torch

from sharpv import SharpV, SharpVConfig
from sharpv.methods import PruningMethod


@dataclass
class Reduced:
    ids: torch.Tensor  # (1, n) prompt after stage 1
    embeds: torch.Tensor  # (1, n, d) input embeddings (features scattered in)
    positions: torch.Tensor  # (1, n) or (3, 1, n)
    visual: torch.Tensor  # (n,) bool
    deepstack: list[torch.Tensor] | None  # Qwen3-VL: per deepstack layer, (n_visual, d)
    keep: torch.Tensor  # (T, f) bool: the method's pre-LLM selection


def is_qwen(fam) -> bool:
    return fam.arch != "llava-onevision"


def stage1_by_hand(fam, inputs: dict, config: SharpVConfig | PruningMethod) -> Reduced:
    """Prune the prompt by hand with a method's own selection (SharpV's stage 1 for a config):
    features from the model's ``get_video_features``, kept placeholders, replaced features
    (pooling), positions gathered from the model's own full positions (or renumbered)."""
    method = SharpV(config) if isinstance(config, SharpVConfig) else config
    config = method.config
    model = fam.model
    ids = inputs["input_ids"]
    video_id = model.config.video_token_id
    assert ids.shape[0] == 1
    with torch.no_grad():
        if is_qwen(fam):
            out = model.get_video_features(
                pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"], return_dict=True
            )
            feats = out.pooler_output[0]
            t = int(inputs["video_grid_thw"][0, 0])
            grid = feats.view(t, feats.shape[0] // t, -1)
            _, h, w = inputs["video_grid_thw"][0].tolist()
            merge = model.config.vision_config.spatial_merge_size
            spatial = (h // merge, w // merge)
            full_pos = model.model.get_rope_index(
                ids, mm_token_type_ids=inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
                second_per_grid_ts=inputs.get("second_per_grid_ts"), attention_mask=inputs["attention_mask"],
            )[0]
        else:
            out = model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"], return_dict=True)
            feats = out.pooler_output[0]
            f = (model.config.vision_config.image_size // model.config.vision_config.patch_size // 2) ** 2
            grid = feats[:-1].view(-1, f, feats.shape[-1])
            spatial = (int(f**0.5), int(f**0.5))
            full_pos = torch.arange(ids.shape[1])[None]
        sel = method.select_visual(grid, spatial)
        keep = sel.keep if sel is not None else torch.ones(grid.shape[:2], dtype=torch.bool)
        if sel is not None and sel.transform is not None:
            body = sel.transform(grid).reshape(-1, grid.shape[-1])
            feats = torch.cat([body, feats[body.shape[0]:]])
            deep_transform = sel.transform
        else:
            deep_transform = None
        keep_ph = keep.reshape(-1)
        if not is_qwen(fam):
            keep_ph = torch.cat([keep_ph, torch.tensor([True])])
        seq_keep = torch.ones_like(ids[0], dtype=torch.bool)
        seq_keep[ids[0] == video_id] = keep_ph
        ids_r = ids[:, seq_keep]
        n = ids_r.shape[1]
        if config.positions == "original":
            pos = full_pos[..., seq_keep]
        else:
            pos = torch.arange(n)[None]
            if full_pos.dim() == 3:
                pos = pos.expand(3, 1, n)
        embeds = model.get_input_embeddings()(ids_r)
        embeds[ids_r == video_id] = feats[keep_ph]
        deepstack = None
        if fam.arch == "qwen3-vl":
            deepstack = []
            for layer in out.deepstack_features:
                d = layer[0]
                if deep_transform is not None:
                    d = deep_transform(d.view(*grid.shape[:2], -1)).reshape(d.shape)
                deepstack.append(d[keep_ph])
    return Reduced(ids_r, embeds, pos, (ids_r == video_id)[0], deepstack, keep)


def _with_new_tokens(model, red: Reduced, tokens: list[int]):
    """The reduced prompt followed by ``tokens`` (teacher-forced): its length n, the total length,
    the embeddings, the positions (each new token one step after the last) and the visual mask."""
    n = red.ids.shape[1]
    ids_new = torch.tensor([tokens], dtype=torch.long)
    embeds = torch.cat([red.embeds, model.get_input_embeddings()(ids_new)], dim=1)
    pos = red.positions
    steps = torch.arange(1, len(tokens) + 1).view(*([1] * (pos.dim() - 1)), -1)
    pos = torch.cat([pos, pos[..., -1:] + steps], dim=-1)
    visual = torch.cat([red.visual, torch.zeros(len(tokens), dtype=torch.bool)])
    return n, n + len(tokens), embeds, pos, visual


def run_layers(fam, red: Reduced, tokens: list[int], config: SharpVConfig | None, *, slice_at: int | None = None,
               slice_rows: torch.Tensor | None = None, groups: torch.Tensor | None = None,
               visible: torch.Tensor | None = None):
    """Run the language model layer by layer on the prompt plus ``tokens`` with SDPA masks.

    With ``config`` (stage 2 on), the reference decides itself, from its own hidden states, which
    visual tokens are withdrawn (or, layerwise, dropped from the cache) at each layer, and hides
    exactly those keys with a 4-D mask. With ``slice_at``, the visual tokens are cut out of the
    sequence before layer ``slice_at`` instead (no mask), or only the rows ``slice_rows`` marks.
    Returns logits for every row and the per-layer sets of hidden keys.

    ``groups`` (n,) long: the chunk of every prompt token (-1 for text), for stage 2 per chunk:
    each chunk's visual tokens decide on their own (the layer mean over that chunk), and
    ``layerwise`` drops hide a chunk's entries from the rows after the chunk's last token.

    ``visible`` (n, n) bool, stage 2 off: which prompt keys each prompt row may see besides the
    causal rule (KV eviction: rows fed after an entry was evicted do not see it); the new tokens
    see what the last prompt row sees.
    """
    model = fam.model
    lm = model.model.language_model
    n, total, embeds, pos, visual = _with_new_tokens(model, red, tokens)
    if groups is not None:
        groups = torch.cat([groups, torch.full((len(tokens),), -1, dtype=torch.long)])
    hidden = embeds
    cos, sin = lm.rotary_emb(hidden, pos)
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    withdrawn = torch.zeros(total, dtype=torch.bool)
    hidden_keys = []
    min_layer = config.kv_min_layer if config else 0
    if config is not None and config.kv_mode == "withdraw" and fam.arch == "qwen3-vl":
        min_layer = max(min_layer, len(red.deepstack))
    keep_rows = torch.ones(total, dtype=torch.bool)
    with torch.no_grad():
        for i, layer in enumerate(lm.layers):
            drop_now = torch.zeros(total, dtype=torch.bool)
            if config is not None and i >= min_layer:
                alive = visual & ~withdrawn
                if alive.any():
                    h, e = hidden[0, alive].float(), embeds[0, alive].float()
                    sim = (h * e).sum(-1) / (h.norm(dim=-1) * e.norm(dim=-1)).clamp_min(1e-6)
                    if config.kv_granularity == "token":
                        drop_now[alive] = sim < config.kv_threshold
                    elif groups is None:
                        drop_now[alive] = bool(sim.mean() < config.kv_threshold)
                    else:
                        alive_groups = groups[alive]
                        for g in alive_groups.unique().tolist():
                            members = alive_groups == g
                            if bool(sim[members].mean() < config.kv_threshold):
                                cols = alive.nonzero().squeeze(1)[members]
                                drop_now[cols] = True
            if config is not None and config.kv_mode == "withdraw":
                withdrawn |= drop_now
                hidden_set = withdrawn.clone()
                mask = causal & ~hidden_set[None, :]
            elif config is not None:
                hidden_set = drop_now
                mask = causal.clone()
                if groups is None:
                    mask[n:] &= ~hidden_set[None, :]  # only tokens after the prompt lose those keys
                else:  # only tokens after the dropped entries' chunk lose them
                    for g in groups[drop_now].unique().tolist():
                        cols = drop_now & (groups == g)
                        last = int((groups == g).nonzero().max())
                        mask[last + 1 :] &= ~cols[None, :]
            else:
                hidden_set = torch.zeros(total, dtype=torch.bool)
                mask = causal
                if visible is not None:
                    allowed = torch.ones(total, total, dtype=torch.bool)
                    allowed[:n, :n] = visible
                    allowed[n:, :n] = visible[-1]
                    mask = causal & allowed
            mask = mask | torch.eye(total, dtype=torch.bool)  # withdrawn rows stay finite
            hidden_keys.append(hidden_set)
            if slice_at is not None and i == slice_at:
                keep_rows = ~visual if slice_rows is None else ~slice_rows
                hidden = hidden[:, keep_rows]
                cos, sin = cos[..., keep_rows, :], sin[..., keep_rows, :]
            if slice_at is not None:
                hidden = layer(hidden, attention_mask=None, position_embeddings=(cos, sin), use_cache=False)
            else:
                hidden = layer(hidden, attention_mask=mask[None, None], position_embeddings=(cos, sin), use_cache=False)
            if red.deepstack is not None and i < len(red.deepstack):
                rows_visual = visual[keep_rows] if slice_at is not None else visual
                hidden[0, rows_visual] = hidden[0, rows_visual] + red.deepstack[i]
        logits = model.lm_head(lm.norm(hidden))
    return logits, hidden_keys, keep_rows


def run_ranked(fam, eager, red: Reduced, tokens: list[int], layers: list[int], counts: list[int]):
    """Attention-ranked withdrawal at several layers (FastV: one, PyramidDrop: several), by hand.

    The language model runs layer by layer on the prompt plus ``tokens`` (SDPA, causal, no mask).
    Before each boundary layer K in ``layers`` the same hidden states also go through the ``eager``
    family's layer K-1 (same weights, eager attention with an explicit causal mask), whose own
    attention weights give the scores: the last prompt token's row, averaged over heads. Of the
    visual tokens still present, the ``counts[s]`` with the highest scores stay (ties: the earlier
    column) and the others are cut out of the sequence from layer K on.

    Returns the logits for every row still present and, per layer, the prompt-and-token columns
    (bool over the original ``n + len(tokens)`` columns) that layer computes.
    """
    model = fam.model
    lm = model.model.language_model
    eager_lm = eager.model.model.language_model
    n, total, embeds, pos, visual = _with_new_tokens(model, red, tokens)
    cos_all, sin_all = lm.rotary_emb(embeds, pos)
    present = torch.ones(total, dtype=torch.bool)
    hidden = embeds
    computed = []
    captured = {}
    prev_hidden, prev_pe = hidden, None  # what the layer before a boundary received

    def grab(module, args, kwargs, output):
        captured["weights"] = output[1]

    with torch.no_grad():
        for i, layer in enumerate(lm.layers):
            if i in layers:
                # the eager twin of layer i-1, on the hidden states layer i-1 received
                cols = present.nonzero().squeeze(1)  # unchanged since layer i-1 ran
                m = cols.numel()
                causal = torch.full((m, m), float("-inf")).triu(1)[None, None]
                handle = eager_lm.layers[i - 1].self_attn.register_forward_hook(grab, with_kwargs=True)
                try:
                    eager_lm.layers[i - 1](prev_hidden, attention_mask=causal, position_embeddings=prev_pe, use_cache=False)
                finally:
                    handle.remove()
                last = int(present[:n].sum()) - 1  # the last prompt token's row
                scores = captured["weights"][0, :, last, :].mean(0)
                vis_rows = visual[cols].nonzero().squeeze(1)
                order = torch.sort(scores[vis_rows], descending=True, stable=True).indices
                dropped_rows = vis_rows[order[counts[layers.index(i)]:]]
                keep_rows = torch.ones(m, dtype=torch.bool)
                keep_rows[dropped_rows] = False
                hidden = hidden[:, keep_rows]
                present[cols[dropped_rows]] = False
            cos, sin = cos_all[..., present, :], sin_all[..., present, :]
            computed.append(present.clone())
            prev_hidden, prev_pe = hidden, (cos, sin)
            hidden = layer(hidden, attention_mask=None, position_embeddings=(cos, sin), use_cache=False)
            if red.deepstack is not None and i < len(red.deepstack):
                vis_cols = visual.nonzero().squeeze(1)
                rows_visual = visual[present]
                hidden[0, rows_visual] = hidden[0, rows_visual] + red.deepstack[i][present[vis_cols]]
        logits = model.lm_head(lm.norm(hidden))
    return logits, computed


def with_encoder_attention(family, inputs, method):
    """``method`` for the hand-built reference (which calls ``select_visual(grid, spatial)``), given
    the vision-encoder attention map the runtime hands it when the video goes through the vision
    tower (recorded by a keep-all probe reading the same layer; the map itself is checked against
    the eager encoder's weights in test_vision_attention.py)."""
    layer = getattr(method, "vision_attention", None)
    if layer is None:
        return method
    seen = []

    class Probe(PruningMethod):
        name = "probe"
        vision_attention = layer

        def select_visual(self, grid, spatial, attention=None):
            seen.append(attention)
            return None

    with torch.no_grad(), Probe()(family.model):
        family.model(**inputs)
    (attention,) = seen
    select = method.select_visual
    hand = copy.copy(method)
    hand.select_visual = lambda grid, spatial: select(grid, spatial, attention=attention.to(grid.device))
    return hand
