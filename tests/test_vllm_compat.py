"""The vLLM plugin's version-dependent branches, without vLLM (issue 26): the plugin decides by
feature whether it can run (every interface it uses, looked up in vLLM's source), warns on a vLLM
that CI does not run end to end, names each missing piece in one line and then registers nothing,
and applies its CPU-runner workaround only to the runner that needs it (vLLM 0.32/0.33's, not
0.34's). vLLM's source is replaced by fake source trees written from the plugin's own list of
pieces, and ``vllm`` by a fake module."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

from sharpv.errors import SharpVError
from sharpv.integrations import vllm as plugin
from sharpv.integrations.vllm import features, workarounds
from sharpv.integrations.vllm.features import CPU_PRUNER, LEGACY_CPU_RUNNER, PIECES, PRUNING_INTERFACE, Piece


def _source(pieces: list[Piece], change: dict[str, str] | None = None) -> str:
    """A module defining ``pieces``: classes, methods with the named parameters, fields, functions.
    ``change`` maps a piece's name to the source line that replaces its definition."""
    change = change or {}
    classes: dict[str, list[str]] = {}
    functions = []
    for piece in pieces:
        if piece.kind == "class":
            classes.setdefault(piece.name, [])
            continue
        cls, _, member = piece.name.rpartition(".")
        if piece.name in change:
            line = change[piece.name]
        elif piece.kind == "field":
            line = f"{member} = None"
        else:
            params = ", ".join(piece.params)
            line = f"def {member}({'self, ' if cls else ''}{params}): pass"
        if line == "":
            continue
        if cls:
            classes.setdefault(cls, []).append(line)
        else:
            functions.append(line)
    out = [f"class {name}:\n" + "".join(f"    {line}\n" for line in body or ["pass"]) for name, body in classes.items()]
    return "\n".join(out + functions) + "\n"


def fake_vllm(root: Path, *, drop: str | None = None, change: dict[str, str] | None = None,
              cpu_runner: str = "legacy") -> Path:
    """A fake vllm package folder under ``root``: every piece of :data:`PIECES` (less ``drop``,
    with ``change``), and the CPU runner of one layout: ``"legacy"`` (0.32/0.33: its load_model
    does not set the flag), ``"legacy-fixed"`` (it does), ``"new"`` (0.34: vllm.v1.worker.cpu),
    ``"none"``."""
    change = dict(change or {})
    pieces = list(PIECES)
    if cpu_runner in ("legacy", "legacy-fixed"):
        pieces += [LEGACY_CPU_RUNNER, PRUNING_INTERFACE]
        if cpu_runner == "legacy-fixed":
            change.setdefault(LEGACY_CPU_RUNNER.name, "def load_model(self):\n        self.is_multimodal_pruning_enabled = True")
    elif cpu_runner == "new":
        pieces += [CPU_PRUNER]
    pieces = [p for p in pieces if p.name != drop and not p.name.startswith(f"{drop}.")]
    package = root / "vllm"
    by_path: dict[str, list[Piece]] = {}
    for piece in pieces:
        by_path.setdefault(piece.path, []).append(piece)
    for path, group in by_path.items():
        file = package / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(_source(group, change))
    return package


def test_every_piece_of_a_complete_vllm_is_found(tmp_path):
    assert features.missing_pieces(fake_vllm(tmp_path), cpu=True) == []


@pytest.mark.parametrize("piece", PIECES, ids=lambda p: p.name)
def test_each_missing_piece_is_named_in_one_line(tmp_path, piece):
    """A piece gone is one line naming it (a class gone: one line for it and one for each member the
    plugin uses)."""
    gone = [p for p in PIECES if p.name == piece.name or p.name.startswith(f"{piece.name}.")]
    missing = features.missing_pieces(fake_vllm(tmp_path, drop=piece.name))
    assert len(missing) == len(gone), missing
    for line, p in zip(missing, gone):
        assert line.startswith(f"{p.label()} ({p.purpose}): ") and "\n" not in line


def test_a_missing_file_is_named(tmp_path):
    package = fake_vllm(tmp_path)
    (package / "multimodal/video_prune/evs.py").unlink()
    missing = features.missing_pieces(package)
    assert len(missing) == 2 and all(line.startswith("vllm/multimodal/video_prune/evs.py") for line in missing)
    assert all(line.endswith("no such file") for line in missing)


def test_an_overridden_hook_whose_parameters_changed_is_missing(tmp_path):
    name = "Qwen3VLForConditionalGeneration._postprocess_video_embeds_evs"
    for line in ("def _postprocess_video_embeds_evs(self, video_embeds_split, video_input, pruning_spec): pass",
                 "def _postprocess_video_embeds_evs(self, video_input, video_embeds_split): pass",
                 "def _postprocess_video_embeds_evs(self, video_embeds_split, video_input, **kwargs): pass"):
        (missing,) = features.missing_pieces(fake_vllm(tmp_path / str(len(line)), change={name: line}))
        assert missing.startswith(f"vllm/{features.QWEN3}: {name}(video_embeds_split, video_input)")
        assert "its parameters are now" in missing


def test_a_called_function_needs_only_the_parameters_the_plugin_passes(tmp_path):
    name = "compute_mrope_for_media"
    renamed = "def compute_mrope_for_media(video_size_thw, spatial_merge_size, tokens_per_second, seconds_per_grid): pass"
    (missing,) = features.missing_pieces(fake_vllm(tmp_path / "renamed", change={name: renamed}))
    assert missing.endswith("no parameter video_second_per_grid")
    more = ("def compute_mrope_for_media(video_size_thw, spatial_merge_size, tokens_per_second=1.0, "
            "video_second_per_grid=1.0, device=None): pass")
    assert features.missing_pieces(fake_vllm(tmp_path / "more", change={name: more})) == []
    open_ = "def compute_mrope_for_media(video_size_thw, spatial_merge_size, **kwargs): pass"
    assert features.missing_pieces(fake_vllm(tmp_path / "kwargs", change={name: open_})) == []


def test_a_method_inherited_from_a_base_class_of_the_same_file_is_found(tmp_path):
    package = fake_vllm(tmp_path, drop="Qwen3VLForConditionalGeneration.recompute_mrope_positions")
    path = package / features.QWEN3
    source = path.read_text().replace("class Qwen3VLForConditionalGeneration:", "class Qwen3VLForConditionalGeneration(Base):")
    path.write_text("class Base:\n    def recompute_mrope_positions(self, input_ids, multimodal_embeddings, mrope_positions, "
                    "num_computed_tokens): pass\n\n" + source)
    assert features.missing_pieces(package) == []


@pytest.mark.parametrize("layout, wrap", [("legacy", True), ("legacy-fixed", False), ("new", False)])
def test_the_cpu_runner_workaround_goes_where_the_runner_needs_it(tmp_path, layout, wrap):
    """vLLM 0.32/0.33's CPUModelRunner.load_model never sets the pruning flag (wrap it); a release
    whose load_model sets it, or 0.34's new CPU runner that builds its pruner itself, needs nothing."""
    package = fake_vllm(tmp_path, cpu_runner=layout)
    assert features.cpu_runner_workaround(package) is wrap
    assert features.missing_pieces(package, cpu=True) == []


def test_no_cpu_runner_the_plugin_knows_is_a_missing_piece_on_cpu_only(tmp_path):
    package = fake_vllm(tmp_path, cpu_runner="none")
    with pytest.raises(LookupError, match="neither is there"):
        features.cpu_runner_workaround(package)
    assert features.missing_pieces(package) == []
    (line,) = features.missing_pieces(package, cpu=True)
    assert "cpu_model_runner.py: CPUModelRunner.load_model or vllm/v1/worker/cpu/mm_pruning.py" in line


def test_the_legacy_runner_without_the_pruning_interface_is_a_missing_piece(tmp_path):
    package = fake_vllm(tmp_path, drop=PRUNING_INTERFACE.name)
    (line,) = features.missing_pieces(package, cpu=True)
    assert line.startswith("vllm/model_executor/models/interfaces.py: supports_multimodal_pruning")


@pytest.mark.parametrize("version, warns", [("0.32.0", False), ("0.32.1+cpu", False), ("0.33.0", True),
                                            ("0.34.0", True), ("0.31.2", True), ("1.0.0rc1", True), ("dev", True)])
def test_a_vllm_other_than_032_gets_a_plain_warning(version, warns):
    text = features.untested_warning(version)
    assert (text is not None) is warns
    if warns:
        assert f"vLLM {version} has every interface" in text and "only vLLM 0.32 runs end to end in this project's CI" in text


class _Registry:
    def __init__(self):
        self.registered = {}

    def get_supported_archs(self):
        return {"Qwen2_5_VLForConditionalGeneration"}

    def register_model(self, name, target):
        self.registered[name] = target


@pytest.fixture
def fake_vllm_module(monkeypatch, tmp_path):
    """Install a fake ``vllm`` (with ``ModelRegistry``, ``platforms``, the CPU runner and the
    pruning interface as modules) over ``fake_vllm``'s source tree; returns a setter."""

    def install(version: str = "0.32.0", cpu: bool = False, **tree):
        package = fake_vllm(tmp_path / "tree", **tree)
        registry = _Registry()
        module = types.ModuleType("vllm")
        module.__path__ = [str(package)]
        module.__version__ = version
        module.ModelRegistry = registry
        platforms = types.ModuleType("vllm.platforms")
        platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: cpu)
        runner = types.ModuleType("vllm.v1.worker.cpu_model_runner")

        class CPUModelRunner:
            def __init__(self, model, enabled):
                self.model = model
                self.model_config = types.SimpleNamespace(
                    multimodal_config=types.SimpleNamespace(is_multimodal_pruning_enabled=lambda: enabled))

            def load_model(self):
                return "loaded"

            def get_model(self):
                return self.model

        runner.CPUModelRunner = CPUModelRunner
        interfaces = types.ModuleType("vllm.model_executor.models.interfaces")
        interfaces.supports_multimodal_pruning = lambda model: getattr(model, "supports_multimodal_pruning", False)
        for name, mod in {"vllm": module, "vllm.platforms": platforms, "vllm.v1.worker.cpu_model_runner": runner,
                          "vllm.model_executor.models.interfaces": interfaces}.items():
            monkeypatch.setitem(sys.modules, name, mod)
        return registry, CPUModelRunner

    return install


@pytest.fixture
def warnings_of_the_plugin():
    """The plugin's log lines (its logger sits under vLLM's, which does not propagate to the root)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("vllm.sharpv")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_register_on_the_tested_vllm_registers_the_three_architectures_silently(fake_vllm_module, warnings_of_the_plugin):
    registry, _ = fake_vllm_module("0.32.0")
    plugin.register()
    assert registry.registered == {name: f"sharpv.integrations.vllm.models:{name}" for name in plugin.ARCHITECTURES.values()}
    assert [r for r in warnings_of_the_plugin if r.levelno >= logging.WARNING] == []


def test_register_on_an_untested_vllm_that_has_every_piece_warns_and_registers(fake_vllm_module, warnings_of_the_plugin):
    registry, _ = fake_vllm_module("0.34.0", cpu_runner="new")
    plugin.register()
    assert set(registry.registered) == set(plugin.ARCHITECTURES.values())
    (record,) = warnings_of_the_plugin
    assert record.levelno == logging.WARNING and "only vLLM 0.32 runs end to end" in record.getMessage()


def test_register_on_a_vllm_that_lacks_a_piece_registers_nothing_and_names_it(fake_vllm_module, warnings_of_the_plugin):
    name = "LlavaOnevisionProcessingInfo.get_num_video_tokens"
    registry, _ = fake_vllm_module("0.35.0", drop=name)
    plugin.register()
    assert registry.registered == {}
    (record,) = warnings_of_the_plugin
    message = record.getMessage()
    assert record.levelno == logging.WARNING and "\n" not in message
    assert message.startswith("sharpv's vLLM plugin registers nothing: vLLM 0.35.0 lacks vllm/model_executor/models/"
                              f"llava_onevision.py: {name}(image_width, image_height, num_frames)")


def test_register_on_cpu_wraps_the_legacy_runner_which_then_sets_the_flag(fake_vllm_module):
    _, runner = fake_vllm_module("0.32.0", cpu=True, cpu_runner="legacy")
    original = runner.load_model
    plugin.register()
    plugin.register()  # every process may load plugins more than once: wrapped once
    assert runner.load_model.__wrapped__ is original
    for model, enabled, want in ((types.SimpleNamespace(supports_multimodal_pruning=True), True, True),
                                 (types.SimpleNamespace(supports_multimodal_pruning=True), False, False),
                                 (types.SimpleNamespace(), True, False)):
        instance = runner(model, enabled)
        assert instance.load_model() == "loaded"
        assert instance.is_multimodal_pruning_enabled is want


@pytest.mark.parametrize("layout", ["new", "legacy-fixed"])
def test_register_on_cpu_leaves_a_runner_that_needs_nothing_alone(fake_vllm_module, layout):
    registry, runner = fake_vllm_module("0.34.0", cpu=True, cpu_runner=layout)
    original = runner.load_model
    plugin.register()
    assert runner.load_model is original
    assert set(registry.registered) == set(plugin.ARCHITECTURES.values())


def test_register_on_cpu_without_a_known_runner_registers_nothing(fake_vllm_module, warnings_of_the_plugin):
    registry, _ = fake_vllm_module("0.35.0", cpu=True, cpu_runner="none")
    plugin.register()
    assert registry.registered == {}
    (record,) = warnings_of_the_plugin
    assert "neither is there" in record.getMessage()


def test_register_off_cpu_needs_no_cpu_runner(fake_vllm_module):
    registry, _ = fake_vllm_module("0.34.0", cpu=False, cpu_runner="none")
    plugin.register()
    assert set(registry.registered) == set(plugin.ARCHITECTURES.values())


def test_llm_kwargs_refuses_a_vllm_that_lacks_a_piece_in_one_line(fake_vllm_module, tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"model_type": "qwen3_vl"}')
    fake_vllm_module("0.34.0", cpu_runner="new")
    kwargs = plugin.llm_kwargs(checkpoint, 0.7)  # an untested vLLM with every piece: no refusal
    assert kwargs["hf_overrides"] == {"architectures": ["SharpVQwen3VLForConditionalGeneration"]}
    features._tree.cache_clear()
    name = "Qwen3VLForConditionalGeneration._create_final_video_embeddings"
    change = {name: "def _create_final_video_embeddings(self, video_embeddings, num_tokens_per_frame): pass"}
    fake_vllm(tmp_path / "other", change=change)
    sys.modules["vllm"].__path__ = [str(tmp_path / "other" / "vllm")]
    with pytest.raises(SharpVError, match=r"^sharpv's vLLM plugin cannot run on this vLLM: it lacks vllm/model_executor/"
                                          r"models/qwen3_vl.py: .*no parameter timestamps, video_grid_thw, retention_mask$"):
        plugin.llm_kwargs(checkpoint, 0.7)


def test_llm_kwargs_names_every_family_and_wants_a_folder(tmp_path):
    with pytest.raises(SharpVError, match="pass a local checkpoint folder \\(Qwen2.5-VL, Qwen3-VL or LLaVA-OneVision\\), "
                                          "not a hub id"):
        plugin.llm_kwargs("Qwen/Qwen2.5-VL-7B-Instruct", 0.7)
    assert "Qwen/" not in plugin.llm_kwargs.__doc__ and "LLaVA-OneVision" in plugin.llm_kwargs.__doc__


def test_the_workaround_module_needs_no_vllm_until_applied():
    workarounds.apply_workarounds(cpu=False)  # off CPU: nothing imported, nothing wrapped
