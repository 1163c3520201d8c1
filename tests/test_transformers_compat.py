"""The installed transformers' cache handover: sharpv reads the cache under the name the release
uses (``cache`` from 5.25, ``past_key_values`` before), never warns about its own calls, and
refuses a continuation it cannot recognise instead of computing at the wrong positions."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import transformers
from transformers.utils import logging as hf_logging

import sharpv
import sharpv.compat
from sharpv.answer import generate_answers
from sharpv.compat import cache_key, cache_keys, cache_kwargs, output_cache
from sharpv.errors import SharpVError

NEW = 3


def _field_name() -> str:
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def test_cache_key_is_the_name_the_installed_release_uses():
    assert cache_key() == _field_name()
    assert cache_keys()[0] == cache_key() and "past_key_values" in cache_keys()


def _first_turn(family, **config):
    inputs = family.inputs("what color is the square ?")
    out = family.model.generate(**inputs, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    return inputs, out


def test_a_cache_under_a_name_sharpv_does_not_read_is_refused(family):
    with sharpv.apply(family.model, keep_ratio=0.5) as handle, torch.no_grad():
        inputs, out = _first_turn(family)
        cache = output_cache(out)
        assert cache in handle._caches
        nxt = out.sequences[:, -1:]
        with pytest.raises(SharpVError, match=rf"'kv_cache'.*transformers {transformers.__version__}"):
            family.model(input_ids=nxt, kv_cache=cache)
        # the same step under the name the release reads continues the pruned cache
        family.model(input_ids=nxt, **cache_kwargs(cache))


def test_a_legacy_tuple_cache_is_refused_while_a_pruned_cache_is_live(family):
    with sharpv.apply(family.model, keep_ratio=0.5), torch.no_grad():
        inputs, out = _first_turn(family)
        cache = output_cache(out)
        legacy = tuple((layer.keys, layer.values) for layer in cache.layers)
        with pytest.raises(SharpVError, match="a form sharpv was not built for"):
            family.model(input_ids=out.sequences[:, -1:], **cache_kwargs(legacy))


def test_a_renamed_cache_argument_fails_loudly_not_silently(family, monkeypatch):
    """What happened with transformers 5.25: generate() handed the cache over under a new name and
    the runtime, reading only the old one, mapped nothing. Simulated here by a runtime that reads
    a name the installed release does not use: the second turn must raise, naming the version."""
    with sharpv.apply(family.model, keep_ratio=0.5), torch.no_grad():
        inputs, out = _first_turn(family)
        monkeypatch.setattr(sharpv.compat, "cache_keys", lambda: ("kv",))
        with pytest.raises(SharpVError, match=rf"'cache'|'past_key_values'.*sharpv does not read.*transformers {transformers.__version__}"):
            family.model.generate(**inputs, **{_field_name(): output_cache(out)}, max_new_tokens=2, do_sample=False)


def test_without_a_pruned_cache_other_arguments_pass_through(family):
    """Refusing is only for calls that could continue a pruned cache: a plain text call with an
    unrelated cache-like keyword reaches the model untouched (the model decides)."""
    ids = family.processor.tokenizer("hello", return_tensors="pt")["input_ids"]
    with sharpv.apply(family.model, keep_ratio=0.5), torch.no_grad():
        family.model(input_ids=ids)


def test_positional_inputs_are_read_by_name(family):
    inputs = family.inputs("what color is the square ?")
    with sharpv.apply(family.model, keep_ratio=0.5) as handle, torch.no_grad():
        ids = inputs.pop("input_ids")
        family.model(ids, **inputs)
    assert handle.stats is not None and handle.stats.visual_tokens_kept < handle.stats.visual_tokens_in


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_sharpv_s_own_calls_raise_no_deprecation_warning(family):
    """Several questions on one pruned video (a cache continued by generate()), a second turn and
    stage 2: neither Python warnings nor transformers' logged ones mention a deprecated name."""
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process
    records = _Records()
    hf_logging.add_handler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            inputs = [family.inputs(q) for q in ("what color is the square ?", "is it red ?")]
            method = sharpv.create("sharpv", keep_ratio=0.5, kv_threshold=2.0, kv_min_layer=2)
            generate_answers(family.model, family.processor, inputs, method, max_new_tokens=NEW)
    finally:
        hf_logging.remove_handler(records)
    said = [str(w.message) for w in caught] + records.messages
    assert not [m for m in said if "deprecat" in m.lower() and ("cache" in m or "past_key_values" in m)], said


def test_the_deprecation_check_has_teeth(family):
    """The check above would see the warning if sharpv passed the old name on a release that
    renamed it (on releases that did not, there is nothing to see)."""
    if cache_key() == "past_key_values":
        pytest.skip("this transformers still uses past_key_values: no deprecation to provoke")
    logging.Logger.warning_once.cache_clear()
    records = _Records()
    hf_logging.add_handler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            inputs = family.inputs("what color is the square ?")
            with torch.no_grad():
                out = family.model.generate(**inputs, max_new_tokens=1, do_sample=False, return_dict_in_generate=True)
                family.model(input_ids=out.sequences[:, -1:], past_key_values=output_cache(out))
    finally:
        hf_logging.remove_handler(records)
    said = [str(w.message) for w in caught] + records.messages
    assert any("deprecat" in m.lower() for m in said), said


def test_stale_position_ids_without_a_mask_are_confirmed_by_the_call_s_tokens(family):
    """transformers 5.20-5.22 give a new generate() call on a Qwen-VL cache position ids computed
    from rope deltas an earlier prompt left on the model, and no attention mask. Simulated on any
    release: a hook ahead of sharpv's replaces the second turn's position ids by such stale ones
    and drops the mask; the turn must still equal the one generate() passes properly."""
    inputs = family.inputs("what color is the square ?")
    turn2 = family.processor.tokenizer(" is it red ?", return_tensors="pt", add_special_tokens=False)["input_ids"]

    def corrupt(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1 and _cache_length(kwargs) > 0:
            kwargs = dict(kwargs)
            kwargs.pop("attention_mask", None)
            kwargs["position_ids"] = torch.arange(1, 1 + ids.shape[1]).view(1, 1, -1)  # stale: starts at 1
            return args, kwargs
        return None

    results = []
    for stale in (False, True):
        with sharpv.apply(family.model, keep_ratio=0.5), torch.no_grad():
            first = family.model.generate(**inputs, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
            history = torch.cat([first.sequences, turn2], dim=1)
            extra = {}
            if "mm_token_type_ids" in inputs:
                extra["mm_token_type_ids"] = torch.cat(
                    [inputs["mm_token_type_ids"], torch.zeros(1, history.shape[1] - inputs["input_ids"].shape[1],
                                                              dtype=inputs["mm_token_type_ids"].dtype)], dim=1)
            hook = family.model.register_forward_pre_hook(corrupt, with_kwargs=True, prepend=True) if stale else None
            try:
                out = family.model.generate(input_ids=history, attention_mask=torch.ones_like(history), **extra,
                                            **cache_kwargs(output_cache(first)), max_new_tokens=NEW,
                                            min_new_tokens=NEW, do_sample=False, output_logits=True,
                                            return_dict_in_generate=True)
            finally:
                if hook is not None:
                    hook.remove()
        results.append(out)
    assert torch.equal(results[0].sequences, results[1].sequences)
    for a, b in zip(results[0].logits, results[1].logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _cache_length(kwargs) -> int:
    cache = next((kwargs[k] for k in cache_keys() if kwargs.get(k) is not None), None)
    return 0 if cache is None else int(cache.get_seq_length())
