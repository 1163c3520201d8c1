"""Public API: configuration validation, method objects, unsupported models, stats."""

from __future__ import annotations

import pytest
import torch

import sharpv
from sharpv import SharpV, SharpVConfig, UnsupportedModelError
from sharpv.adapters import supported_model_types


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"keep_ratio": 0.0}, "keep_ratio"),
        ({"keep_ratio": 1.2}, "keep_ratio"),
        ({"keep_ratio": "half"}, "keep_ratio"),
        ({"spatial_weight": -1.0}, "spatial_weight"),
        ({"ratio_scale": 0.0}, "ratio_scale"),
        ({"min_tokens_per_frame": -1}, "min_tokens_per_frame"),
        ({"min_tokens_per_frame": 1.5}, "min_tokens_per_frame"),
        ({"positions": "relative"}, "positions"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SharpVConfig(**kwargs)


def test_config_modes():
    assert SharpVConfig().mode == "adaptive"
    assert SharpVConfig(keep_ratio=0.3).mode == "budget"
    assert SharpVConfig(keep_ratio=1).to_dict()["keep_ratio"] == 1


def test_method_object_takes_a_config_or_keywords():
    assert SharpV(keep_ratio=0.5).config == SharpVConfig(keep_ratio=0.5)
    with pytest.raises(ValueError):
        SharpV(SharpVConfig(), keep_ratio=0.5)


def test_unsupported_model_lists_the_supported_families():
    class Config:
        model_type = "llama"

    class Model(torch.nn.Module):
        config = Config()

    with pytest.raises(UnsupportedModelError) as info:
        sharpv.apply(Model())
    message = str(info.value)
    for name in ("llava-onevision", "qwen2.5-vl", "qwen3-vl", "llama"):
        assert name in message
    assert set(supported_model_types()) == {"llava_onevision", "qwen2_5_vl", "qwen3_vl"}


def test_stats_describe_the_last_call(family):
    inputs = family.inputs(n_frames=8)
    with SharpV(keep_ratio=0.5, positions="compact")(family.model) as handle, torch.no_grad():
        assert handle.stats is None
        family.model(**inputs)
    d = handle.stats.to_dict()
    frames = 8 if family.arch == "llava-onevision" else 4
    assert d["frames"] == frames and len(d["kept_per_frame"]) == frames
    assert d["tokens_per_frame"] == 16
    assert d["visual_tokens_in"] == frames * 16 and d["visual_tokens_kept"] == frames * 8
    assert d["positions"] == "compact" and d["mode"] == "budget"
    assert d["pruning_seconds"] > 0 and d["kept_share"] == 0.5


def test_text_only_calls_pass_through(family):
    ids = family.processor.tokenizer("what color is it ?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = family.model(input_ids=ids).logits
        with sharpv.apply(family.model) as handle:
            during = family.model(input_ids=ids).logits
    assert torch.equal(before, during) and handle.stats is None
