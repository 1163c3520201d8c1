"""Stage 2 measured: the cosine without a model's massive channels (``kv_ignore_channels``), the
``sharpv similarity`` study that finds those channels and plots s_l, and the ``sharpv stage2``
study that sets SharpV's per-prompt decision against blind withdrawal."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import pytest
import torch

import sharpv
from sharpv import SharpVConfig
from sharpv.adapters import adapter_for
from sharpv.cli import main
from sharpv.core.kv import channel_magnitudes, massive_channels, token_similarity
from sharpv.harness.layer_similarity import first_crossing, trace
from sharpv.methods import load_config


def test_ignored_channels_leave_both_vectors():
    g = torch.Generator().manual_seed(0)
    h, e = torch.randn(3, 5, 16, generator=g), torch.randn(3, 5, 16, generator=g)
    keep = [c for c in range(16) if c not in (3, 7)]
    by_hand = torch.nn.functional.cosine_similarity(h[..., keep], e[..., keep], dim=-1)
    got = token_similarity(h, e, ignore=torch.tensor([3, 7]))
    assert torch.allclose(got, by_hand, atol=1e-6)
    assert torch.equal(token_similarity(h, e, ignore=torch.tensor([], dtype=torch.long)), token_similarity(h, e))


def test_a_massive_channel_dominates_the_raw_cosine_and_ignoring_it_restores_it():
    """The situation on SmolLM2: one channel hundreds of times larger than the rest, in the hidden
    state but not in the input embedding. Raw cosine collapses though the rest is unchanged."""
    g = torch.Generator().manual_seed(1)
    e = torch.randn(64, 32, generator=g)
    h = e.clone()
    h[:, 5] = 300.0  # the rest of the vector is exactly the embedding
    assert float(token_similarity(h, e).mean()) < 0.05
    ignore = torch.tensor([5])
    # the embedding's own channel 5 is left out too, so the rest is compared with the rest
    assert float(token_similarity(h, e, ignore=ignore).mean()) == pytest.approx(1.0, abs=1e-5)


def test_massive_channels_are_those_far_above_the_median_and_the_floor():
    hidden = torch.randn(1, 40, 24, generator=torch.Generator().manual_seed(2))
    hidden[0, 3, 7] = 900.0
    hidden[0, 9, 2] = -400.0
    hidden[0, 11, 20] = 30.0  # 40x the median: under the default 100x (and under the floor of 50)
    valid = torch.ones(1, 40, dtype=torch.bool)
    peaks = channel_magnitudes(hidden, valid)
    median = float(hidden.abs().median())
    assert massive_channels(peaks, median).tolist() == [2, 7]
    assert massive_channels(peaks, median, ratio=20.0, floor=10.0).tolist() == [2, 7, 20]
    valid[0, 3] = False  # a padded position does not count
    assert massive_channels(channel_magnitudes(hidden, valid), median).tolist() == [2]


@pytest.mark.parametrize("value,expected", [("507+247", (247, 507)), ([3, 1, 3], (1, 3)), (12, (12,)), ((), ()),
                                            ("7, 2", (2, 7))])
def test_kv_ignore_channels_takes_lists_and_the_command_line_form(value, expected):
    config = SharpVConfig(kv_ignore_channels=value)
    assert config.kv_ignore_channels == expected
    assert config.to_dict()["kv_ignore_channels"] == list(expected)


@pytest.mark.parametrize("value", ["a+b", [-1], [1.5], True, {"x": 1}])
def test_kv_ignore_channels_refuses_what_is_not_channel_indices(value):
    with pytest.raises(ValueError, match="kv_ignore_channels"):
        SharpVConfig(kv_ignore_channels=value)


def test_a_config_file_with_ignored_channels_round_trips(tmp_path):
    from sharpv.methods import write_config

    path = write_config(tmp_path / "c.json", "sharpv", {"kv_ignore_channels": [9, 4]}, label="x")
    assert sorted(json.loads(path.read_text())["settings"]["kv_ignore_channels"]) == [4, 9]
    assert load_config(path).build().config.kv_ignore_channels == (4, 9)


def test_the_policy_measures_without_the_channels_as_the_study_does(family):
    """The runtime's s_l with ``kv_ignore_channels`` (SharpV, stage 1 keeping all, M = -1) equals
    the study's independent measurement (pre-hooks on a dense forward), differs from the raw cosine,
    and a threshold between two layers' values fires exactly where ``first_crossing`` says."""
    model = family.model
    inputs = family.inputs()
    adapter = adapter_for(model)
    d = model.config.get_text_config().hidden_size
    ignore = (0, d // 3, d - 1)
    measured = trace(model, adapter, inputs, torch.tensor(ignore))
    curve = measured.curves["without_massive"]
    assert max(abs(a - b) for a, b in zip(curve[1:], measured.curves["cosine"][1:])) > 1e-4

    config = SharpVConfig(keep_ratio=1.0, kv_threshold=-1.0, kv_ignore_channels=ignore)
    with sharpv.apply(model, config) as handle, torch.no_grad():
        model(**inputs)
    assert handle.stats.layer_similarity == pytest.approx(curve, abs=1e-5)

    first = max(2, adapter.min_withdraw_layer())
    later = sorted(curve[first:])
    gaps = [(b - a, (a + b) / 2) for a, b in zip(later, later[1:]) if b - a > 1e-3]
    assert gaps, curve
    threshold = max(gaps)[1]
    expected = first_crossing(curve, threshold, first)
    config = SharpVConfig(keep_ratio=1.0, kv_threshold=threshold, kv_ignore_channels=ignore, kv_min_layer=first)
    with sharpv.apply(model, config) as handle, torch.no_grad():
        model(**inputs)
    assert expected is not None and handle.stats.kv_withdraw_layer == expected


def test_the_reference_layer_policy_measures_as_the_study_does(family):
    """``kv_reference_layer=1``: the runtime compares every later layer with the hidden states
    entering layer 1 (layer 0 reports 1, layer 1 is 1 by construction), equal to the study's
    independent ``from_reference`` curve, and fires exactly where ``first_crossing`` says."""
    model, inputs = family.model, family.inputs()
    adapter = adapter_for(model)
    measured = trace(model, adapter, inputs, None, reference_layer=1)
    curve = measured.curves["from_reference"]
    assert curve[0] == 1.0 and curve[1] == pytest.approx(1.0, abs=1e-5)
    assert max(abs(a - b) for a, b in zip(curve[2:], measured.curves["cosine"][2:])) > 1e-3  # another measure

    config = SharpVConfig(keep_ratio=1.0, kv_threshold=-1.0, kv_reference_layer=1)
    with sharpv.apply(model, config) as handle, torch.no_grad():
        model(**inputs)
    assert handle.stats.layer_similarity == pytest.approx(curve, abs=1e-5)

    first = max(2, adapter.min_withdraw_layer())
    later = sorted(curve[first:])
    gaps = [(b - a, (a + b) / 2) for a, b in zip(later, later[1:]) if b - a > 1e-3]
    assert gaps, curve
    threshold = max(gaps)[1]
    expected = first_crossing(curve, threshold, first)
    config = SharpVConfig(keep_ratio=1.0, kv_threshold=threshold, kv_reference_layer=1, kv_min_layer=first)
    with sharpv.apply(model, config) as handle, torch.no_grad():
        model(**inputs)
    assert expected is not None and handle.stats.kv_withdraw_layer == expected


@pytest.mark.parametrize("settings,match", [({"kv_reference_layer": 2}, "must be below kv_min_layer"),
                                            ({"kv_reference_layer": 3, "kv_min_layer": 3}, "must be below kv_min_layer"),
                                            ({"kv_reference_layer": -1}, "integer >= 0"),
                                            ({"kv_reference_layer": True}, "integer >= 0")])
def test_kv_reference_layer_refuses_what_cannot_work(settings, match):
    with pytest.raises(ValueError, match=match):
        SharpVConfig(**settings)


def test_a_channel_past_the_hidden_size_is_one_clear_error(family):
    d = family.model.config.get_text_config().hidden_size
    with pytest.raises(sharpv.SharpVError, match="hidden size is"):
        with sharpv.apply(family.model, SharpVConfig(kv_ignore_channels=(d,))), torch.no_grad():
            family.model(**family.inputs())


def test_stage2_firing_at_its_first_layer_warns_once_and_elsewhere_not(family):
    """The signature of s_l that does not track what the model needs (random weights here, and
    smollm2-dinov2): the rule fires at the first layer it may. One warning per handle, naming the
    layer and what to do; none when it fires later, never, or per token."""
    model, inputs = family.model, family.inputs()
    first = max(2, adapter_for(model).min_withdraw_layer())
    with pytest.warns(sharpv.StageTwoEarlyWarning, match=f"at layer {first}, the first layer it may.*--no-kv") as caught:
        with sharpv.apply(model, SharpVConfig(keep_ratio=1.0, kv_threshold=2.0)) as handle, torch.no_grad():
            model(**inputs)
            model(**inputs)
    assert handle.stats.kv_withdraw_layer == first
    assert sum(isinstance(w.message, sharpv.StageTwoEarlyWarning) for w in caught) == 1

    with sharpv.apply(model, SharpVConfig(keep_ratio=1.0, kv_threshold=-1.0)) as handle, torch.no_grad():
        model(**inputs)
    curve = handle.stats.layer_similarity  # every layer's s_l: nothing withdrawn
    quiet = [SharpVConfig(keep_ratio=1.0, kv_threshold=-1.0),  # never fires
             SharpVConfig(keep_ratio=1.0, kv_threshold=2.0, kv_granularity="token")]  # per token: some always drop early
    later = min(curve[first + 1:])
    assert later < curve[first] - 1e-4, curve  # so a threshold between them first fires after the first allowed layer
    quiet.append(SharpVConfig(keep_ratio=1.0, kv_threshold=(later + curve[first]) / 2))
    for config in quiet:
        with warnings.catch_warnings():
            warnings.simplefilter("error", sharpv.StageTwoEarlyWarning)
            with sharpv.apply(model, config) as handle, torch.no_grad():
                model(**inputs)
        assert handle.stats.kv_withdraw_layer != first or config.kv_granularity == "token"


def test_first_crossing_respects_the_earliest_layer():
    assert first_crossing([1.0, 0.1, 0.3, 0.15], 0.2, 2) == 3
    assert first_crossing([1.0, 0.1, 0.3, 0.15], 0.2, 1) == 1
    assert first_crossing([1.0, 0.5], 0.2, 1) is None


def test_similarity_command_writes_the_study_and_a_config_that_loads(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["similarity", "--n", "3", "--calibration-n", "2", "--frames", "4", "--out", str(out)]) == 0
    record = json.loads((out / "similarity.json").read_text())
    layers = record["summary"]["layers"]
    assert len(record["videos"]) == 3 and all(len(v["curves"]["cosine"]) == layers for v in record["videos"])
    assert record["summary"]["measures"]["cosine"]["mean"][0] == pytest.approx(1.0, abs=1e-4)
    assert (out / "similarity.png").stat().st_size > 5000
    assert load_config(out / "config.json").method == "sharpv"
    assert "Massive channels" in (out / "similarity.md").read_text()
    assert record["provenance"]["wall_seconds"] > 0


def test_stage2_command_pairs_every_arm_and_permutes_sharpvs_layers(tmp_path, capsys):
    out = tmp_path / "st2"
    assert main(["stage2", "--n", "6", "--frames", "4", "--threshold", "0.6", "--sweep", "1,3", "--out", str(out)]) == 0
    record = json.loads((out / "stage2.json").read_text())
    labels = [a["label"] for a in record["arms"]]
    assert labels[:2] == ["dense", "sharpv stage 2"] and "VTW at layer 1" in labels and "VTW at layer 3" in labels
    q = record["questions"]
    assert len(q) == 6 and all(all(label in row for label in labels) for row in q)
    chosen = [row["sharpv stage 2"]["layer"] for row in q]
    random_label = next(a for a in labels if a.startswith("random"))
    assert Counter(row[random_label]["layer"] for row in q) == Counter(chosen)
    assert all(row["VTW at layer 1"]["layer"] == 1 and row["dense"]["layer"] is None for row in q)
    s = record["summary"]
    assert s["sharpv stage 2"]["minus_sharpv"]["mean"] == 0.0
    assert s["VTW at layer 1"]["compute_share"] < s["VTW at layer 3"]["compute_share"] < s["dense"]["compute_share"]
    assert (out / "stage2.png").stat().st_size > 5000
