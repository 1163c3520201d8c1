"""SharpV inside vLLM (issues 12 and 26): the plugin's selection equals sharpv's own, generation
completes, EVS and VidCom2 run through the same engine as controls, each pruned video gets one log
line, vLLM's own --video-pruning-method takes no out-of-tree method, and what the plugin does not
support is refused in one line. Runs where vLLM is installed (CI: its own virtualenv, see .ci/run);
elsewhere it is skipped. The version-dependent branches run without vLLM in tests/test_vllm_compat.py."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (CI runs this file in its own virtualenv)")

import sharpv  # noqa: E402
from sharpv.core.selection import select_count  # noqa: E402
from sharpv.errors import SharpVError  # noqa: E402
from sharpv.integrations.vllm import architecture_for, check_vllm, features, llm_kwargs  # noqa: E402
from sharpv.tiny import build_tiny_model  # noqa: E402
from sharpv.video import SampledVideo, build_inputs, load_processor  # noqa: E402

from conftest import moving_square_video  # noqa: E402

# Qwen: 8 frames = 4 temporal steps of 16 tokens, LLaVA-OneVision: 8 frames of 16 tokens; at 0.5 vLLM keeps
# int(n * 0.5) and sharpv's budget round(0.5 * n): the same count
RATE = 0.5
NEW = 6
QUESTION = "what color is the square ?"
FPS = 4.0
VIDEOS = [moving_square_video(8, seed=s) for s in (0, 3)]


@pytest.fixture(scope="module", params=["qwen2.5-vl", "qwen3-vl", "llava-onevision"])
def checkpoint(request, tmp_path_factory):
    return request.param, build_tiny_model(tmp_path_factory.mktemp("vllm") / request.param, request.param, seed=1, head_dim=32)


def _engine(path, **kwargs):
    from vllm import LLM

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: apply_model reads the model
    # a fixed KV budget (64 MiB) instead of a share of the machine's memory: several engines in one process
    return LLM(**kwargs, max_model_len=2048, limit_mm_per_prompt={"video": 1}, enforce_eager=True, dtype="float32",
               kv_cache_memory_bytes=64 * 2**20, seed=0)


def _request(processor, video: SampledVideo) -> dict:
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)  # the chat template's own prompt
    metadata = {"fps": video.source_fps, "frames_indices": list(video.indices), "total_num_frames": video.total_frames,
                "duration": video.total_frames / video.source_fps, "video_backend": "opencv", "do_sample_frames": False}
    return {"prompt": prompt, "multi_modal_data": {"video": (video.frames, metadata)}}


def _hf(path, arch):
    """sharpv's transformers path on the same checkpoint: the kept tokens per frame, the video's tokens
    and the greedy answer. LLaVA-OneVision in vLLM feeds the shortened prompt at contiguous positions:
    sharpv's compact positions."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    processor = load_processor(path, arch, backend="transformers")
    out = []
    for video in VIDEOS:
        inputs = build_inputs(processor, QUESTION, video)
        positions = "compact" if arch == "llava-onevision" else "original"
        with sharpv.apply(model, keep_ratio=1 - RATE, kv=False, positions=positions) as handle, torch.no_grad():
            tokens = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        video = handle.stats.videos[0]
        out.append((video.kept_per_frame, video.tokens_in, tokens[0, inputs["input_ids"].shape[1]:].tolist()))
    return out, processor


class _Lines(logging.Handler):
    """The plugin's log lines (its logger sits under vLLM's ``vllm``, which does not propagate)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_sharpv_in_vllm_keeps_what_sharpv_keeps_and_generates(checkpoint):
    from vllm import SamplingParams

    arch, path = checkpoint
    want, processor = _hf(path, arch)
    llm = _engine(path, **llm_kwargs(path, RATE))
    params = SamplingParams(max_tokens=NEW, min_tokens=NEW, temperature=0)
    log = _Lines()
    logging.getLogger("vllm.sharpv").addHandler(log)
    try:
        for video, (kept, total, tokens) in zip(VIDEOS, want):
            log.lines.clear()
            out = llm.generate(_request(processor, video), params, use_tqdm=False)
            (got,) = llm.apply_model(lambda model: model.sharpv_kept_per_frame)
            assert got == [kept], "vLLM kept other tokens per frame than sharpv's transformers path"
            assert sum(kept) == int(total * (1 - RATE))
            assert log.lines == [f"SharpV kept {sum(kept)} of {total} video tokens ({len(kept)} frames of "
                                 f"{total // len(kept)}, rate {RATE:g})"], "one log line per pruned video"
            assert len(out[0].outputs[0].token_ids) == NEW
            assert list(out[0].outputs[0].token_ids) == tokens, "greedy answers differ between vLLM and transformers"
    finally:
        logging.getLogger("vllm.sharpv").removeHandler(log)


def test_the_selection_is_sharpvs_on_vllms_own_features(checkpoint):
    """The mask vLLM applies is SharpV's selection (select_count) on the embeddings vLLM hands it."""
    from sharpv.integrations.vllm.models import retention_mask

    arch, path = checkpoint
    if arch == "llava-onevision":
        pytest.skip("LLaVA-OneVision's pruning step is checked against transformers end to end above")
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(4 * 16, 64 * (3 if arch == "qwen3-vl" else 1), generator=g)  # Qwen3-VL: deepstack channels after
    mask = retention_mask(embeds, 4, 16, RATE, 64)
    assert torch.equal(mask, select_count(embeds[:, :64].reshape(4, 16, 64), 32).keep)


def test_evs_runs_through_the_same_engine_as_a_control(checkpoint):
    from vllm import SamplingParams

    arch, path = checkpoint
    if arch == "llava-onevision":
        pytest.skip("vLLM has no EVS (no video pruning at all) for LLaVA-OneVision")
    processor = load_processor(path, arch, backend="transformers")
    video = VIDEOS[0]
    request = _request(processor, video)
    if arch == "qwen3-vl":  # vLLM's own recomputation needs the prompt without the outer vision pair (see workarounds)
        request["prompt"] = request["prompt"].replace("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>")
    dense = _engine(path, model=str(path))
    full = dense.generate(request, SamplingParams(max_tokens=2, temperature=0), use_tqdm=False)[0]
    del dense
    evs = _engine(path, model=str(path), video_pruning_rate=RATE)
    pruned = evs.generate(request, SamplingParams(max_tokens=NEW, min_tokens=NEW, temperature=0), use_tqdm=False)[0]
    assert len(full.prompt_token_ids) - len(pruned.prompt_token_ids) == 64 - 32
    assert len(pruned.outputs[0].token_ids) == NEW


def test_vidcom2_runs_through_the_same_engine_as_a_second_control(checkpoint):
    """vLLM 0.32 prunes Qwen3-VL videos with VidCom2 too (``video_pruning_method="vidcom2"``; its count
    is ``max(T, int(T * f * (1 - rate)))``, EVS's and SharpV's ``max(f, ...)``: equal here): the same
    number of tokens as SharpV and EVS leave the prompt, and generation completes."""
    from vllm import SamplingParams

    arch, path = checkpoint
    if arch != "qwen3-vl":
        pytest.skip("vLLM 0.32 has VidCom2 for Qwen3-VL only (supported_video_pruning_methods)")
    processor = load_processor(path, arch, backend="transformers")
    request = _request(processor, VIDEOS[0])
    # vLLM's own recomputation needs the prompt without the outer vision pair (see workarounds)
    request["prompt"] = request["prompt"].replace("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>")
    dense = _engine(path, model=str(path))
    full = dense.generate(request, SamplingParams(max_tokens=2, temperature=0), use_tqdm=False)[0]
    del dense
    vidcom2 = _engine(path, model=str(path), video_pruning_rate=RATE, video_pruning_method="vidcom2")
    pruned = vidcom2.generate(request, SamplingParams(max_tokens=NEW, min_tokens=NEW, temperature=0), use_tqdm=False)[0]
    assert len(full.prompt_token_ids) - len(pruned.prompt_token_ids) == 64 - 32
    assert len(pruned.outputs[0].token_ids) == NEW
    del vidcom2
    sharpv_engine = _engine(path, **llm_kwargs(path, RATE))
    ours = sharpv_engine.generate(request, SamplingParams(max_tokens=1, temperature=0), use_tqdm=False)[0]
    assert len(ours.prompt_token_ids) == len(pruned.prompt_token_ids)


def test_vllms_pruning_switch_takes_no_out_of_tree_method():
    """Why ``--video-pruning-method sharpv`` is not offered (docs/integrations.md): vLLM's method
    names are a Literal (vllm/config/multimodal.py, ``VideoPruningMethod``), so its command line
    refuses another name and so does its config, even after the plugin has loaded."""
    import typing

    from vllm.config.multimodal import MultiModalConfig, VideoPruningMethod
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    assert typing.get_args(VideoPruningMethod) == ("evs", "vidcom2")
    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())  # loads the general plugins first
    with pytest.raises(SystemExit):
        parser.parse_args(["--video-pruning-method", "sharpv"])
    with pytest.raises(Exception, match="Input should be 'evs' or 'vidcom2'"):
        MultiModalConfig(video_pruning_method="sharpv")


def test_what_the_plugin_does_not_support_is_refused_in_one_line(tmp_path, checkpoint):
    arch, path = checkpoint
    for rate in (1.0, -0.1, 1.5, "0.5", True):
        with pytest.raises(SharpVError, match=r"video_pruning_rate must be a number in \[0, 1\)"):
            llm_kwargs(path, rate)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "llava_next_video"}')
    with pytest.raises(SharpVError, match="prunes Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision checkpoints"):
        architecture_for(other)
    with pytest.raises(SharpVError, match="no config.json"):
        llm_kwargs(tmp_path, 0.5)
    check_vllm()  # the installed vLLM has every piece the plugin uses (by feature) ...
    assert features.missing_pieces(cpu=True) == []
    assert features.cpu_runner_workaround()  # ... and 0.32's CPU runner needs the workaround
    assert features.untested_warning(vllm.__version__) is None
    assert llm_kwargs(path, 0.25)["hf_overrides"] == {"architectures": [architecture_for(path)]}


def _mp4_data_url(frames: np.ndarray, fps: int = 4) -> str:
    import base64
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"qscale": "2"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return "data:video/mp4;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_openai_server_serves_sharpv_like_the_offline_engine(checkpoint, tmp_path):
    """The serve path: vLLM's OpenAI server started with the plugin's flags answers a chat request
    with a video exactly as the offline engine's ``chat()`` does (same pruned prompt, same tokens)."""
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from vllm import SamplingParams

    arch, path = checkpoint
    kwargs = llm_kwargs(path, RATE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(path),
               "--hf-overrides", json.dumps(kwargs["hf_overrides"]), "--video-pruning-rate", str(RATE),
               "--max-model-len", "2048", "--enforce-eager", "--dtype", "float32", "--seed", "0",
               "--kv-cache-memory-bytes", str(64 * 2**20), "--port", str(port)]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": _mp4_data_url(VIDEOS[0].frames)}},
                                             {"type": "text", "text": QUESTION}]}]
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError("the server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
                time.sleep(2)
        body = {"model": str(path), "max_tokens": NEW, "min_tokens": NEW, "temperature": 0, "messages": messages}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        served = json.loads(urllib.request.urlopen(request, timeout=300).read())
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    llm = _engine(path, **kwargs)
    (offline,) = llm.chat(messages, SamplingParams(max_tokens=NEW, min_tokens=NEW, temperature=0), use_tqdm=False)
    assert served["usage"]["completion_tokens"] == NEW
    assert served["usage"]["prompt_tokens"] == len(offline.prompt_token_ids)
    assert served["choices"][0]["message"]["content"] == offline.outputs[0].text
    (kept,) = llm.apply_model(lambda model: model.sharpv_kept_per_frame)  # vLLM's loader samples the frames it takes
    assert sum(kept[0]) == int(len(kept[0]) * 16 * (1 - RATE))
    server_log = (tmp_path / "server.log").read_text()
    assert server_log.count(f"SharpV kept {sum(kept[0])} of {len(kept[0]) * 16} video tokens") == 1, server_log[-3000:]


def test_a_sharpv_architecture_on_another_family_stops_with_one_line(checkpoint):
    """``--hf-overrides`` naming the wrong SharpV class (by hand, not through llm_kwargs) stops before
    anything is built, with one line naming the mismatch: vLLM 0.32 checks the config type first;
    the SharpV classes check the checkpoint's model_type again before vLLM's constructor runs."""
    from sharpv.integrations.vllm import ARCHITECTURES

    arch, path = checkpoint
    wrong = next(name for name in ARCHITECTURES.values() if name != architecture_for(path))
    with pytest.raises(Exception, match=r"Invalid type of HuggingFace config|serves '\w+' checkpoints, this one is") as caught:
        _engine(path, model=str(path), hf_overrides={"architectures": [wrong]}, video_pruning_rate=RATE)
    assert "\n" not in str(caught.value)


def test_the_classes_check_the_checkpoint_family_themselves(checkpoint):
    from types import SimpleNamespace

    from sharpv.integrations.vllm import models

    arch, path = checkpoint
    config = SimpleNamespace(model_config=SimpleNamespace(hf_config=SimpleNamespace(model_type="llava_next_video")))
    for cls in (models.SharpVQwen2_5_VLForConditionalGeneration, models.SharpVQwen3VLForConditionalGeneration,
                models.SharpVLlavaOnevisionForConditionalGeneration):
        with pytest.raises(SharpVError, match=f"{cls.__name__} serves '{cls.sharpv_model_type}' checkpoints, this one is 'llava_next_video'"):
            cls(vllm_config=config)


def test_the_benchs_workers_run_interleaved_rounds_on_real_engines(tmp_path):
    """The benchmark's worker processes with real vLLM engines (sharpv.integrations.vllm.bench): the
    Qwen3-VL-2B shape cut to one LLM layer and 256 vocabulary rows, 4 frames of 64x64 (8 video
    tokens), dense and SharpV at rate 0.5, each alive in its own process for two interleaved rounds;
    each round's answer has its timings and the pruned prompt; the ratios are taken within rounds."""
    from types import SimpleNamespace

    from sharpv.integrations.vllm import bench

    checkpoint = bench.build_checkpoint("qwen3-vl-2b", 4, tmp_path / "model", frames=4, vocab_size=256, text_layers=1)
    args = SimpleNamespace(frames=4, tokens_per_step=4, requests=2, new_tokens=2, dtype="float32", shape="qwen3-vl-2b",
                           max_model_len=512, kv_cache_mib=64)
    engines = [bench.Engine("dense"), bench.Engine("sharpv", 0.5)]
    processes = {}
    try:
        processes = bench.start_engines(engines, lambda e: bench.EngineProcess(
            e.id, lambda fd: bench.worker_command(args, e, checkpoint, fd), bench.worker_environment(),
            tmp_path / f"{e.mode}.log"))
        for p in processes.values():
            assert p.ready["ready"] and p.ready["vllm"] == vllm.__version__
            assert p.loaded_memory["rss_bytes"] > 0
        timed, log = bench.run_rounds([e.id for e in engines], lambda e, i: processes[e].run(i), rounds=2, warmup=0,
                                      seed=1)
        records = [bench.make_record(e, timed[e.id]) for e in engines]
    finally:
        for p in processes.values():
            p.close()
    assert [sorted(r["order"]) for r in log] == [["dense", "sharpv @ 0.5"]] * 2
    bench.summarise(records, video_tokens=8)
    dense, sharpv = records
    for r in records:
        assert len(r["rounds"]["requests_per_second"]) == 2 and all(v > 0 for v in r["rounds"]["requests_per_second"])
        assert all(t > 0 for t in r["rounds"]["ttft_seconds_alone"])
        assert r["generated_tokens"] == [2, 2]
    assert sharpv["video_tokens_kept"] == 4 and dense["prompt_tokens"] - sharpv["prompt_tokens"] == 4
    assert sharpv["rounds"]["vs_dense"] == pytest.approx(
        [s / d for s, d in zip(sharpv["rounds"]["requests_per_second"], dense["rounds"]["requests_per_second"])])
    assert "SharpV kept 4 of 8 video tokens" in (tmp_path / "sharpv.log").read_text()
