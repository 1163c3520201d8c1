"""The lmms-eval integration's parts that need no lmms-eval: reading ``--model_args`` (every bad
value one line, before any weight loads) and the offline task folders (what lmms-eval will ask and
how it scores, checked against ``sharpv eval``'s own prompt and scoring rule). The real lmms-eval
command line runs in tests/integrations/test_lmms_eval.py, in its own virtualenv."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from sharpv.cli import main
from sharpv.errors import SharpVError
from sharpv.harness.evaluate import is_correct, load_jsonl
from sharpv.integrations.lmms_eval.model_args import MODEL_KEYS, parse_model_args
from sharpv.integrations.lmms_eval.task import TaskFunctions, write_task
from sharpv.methods import METHODS
from sharpv.synthetic.model import shipped_model_path


def test_defaults_are_the_shipped_model_and_adaptive_sharpv():
    args = parse_model_args({})
    assert Path(args.pretrained) == shipped_model_path()
    assert args.model_type == "llava_onevision"
    assert args.method.name == "sharpv" and args.method.config.keep_ratio is None
    assert args.frames is None and args.device == "cpu" and args.dtype == "auto"
    assert args.describe() == "method=sharpv"


def test_method_settings_reach_the_method():
    args = parse_model_args({"method": "sharpv", "keep_ratio": 0.2, "kv": False, "kv_threshold": 0.3,
                             "positions": "compact", "max_frames_num": 8, "chunk_frames": 4})
    c = args.method.config
    assert (c.keep_ratio, c.kv, c.kv_threshold, c.positions) == (0.2, False, 0.3, "compact")
    assert args.frames == 8 and args.chunk_frames == 4
    assert args.describe() == "method=sharpv keep_ratio=0.2 positions=compact kv=False kv_threshold=0.3"
    assert parse_model_args({"keep_ratio": "adaptive"}).method.config.keep_ratio is None
    assert parse_model_args({"keep_ratio": "none"}).method.config.keep_ratio is None
    assert parse_model_args({"max_num_frames": 12}).frames == 12  # the Qwen models' spelling
    # lists with slashes (lmms-eval splits model_args on commas; its own parser leaves "6/12/18" text)
    assert parse_model_args({"method": "pyramiddrop", "layers": "1/2/3"}).method.config.layers == (1, 2, 3)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_and_each_of_its_settings_is_reachable(name):
    config = METHODS[name].config_class()
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "keep_ratio" and name == "dense":
            continue
        args = parse_model_args({"method": name, f.name: value})
        assert args.method.name == name and getattr(args.method.config, f.name) == value


BAD = [
    ({"method": "sharpvv"}, "--model_args method=sharpvv: unknown method; registered methods: dense, sharpv"),
    ({"keep_ratio": 1.5}, "--model_args keep_ratio=1.5: keep_ratio must be"),
    ({"keep_ratio": 0}, "--model_args keep_ratio=0: keep_ratio must be"),
    ({"method": "evs", "keep_ratio": "lots"}, "--model_args keep_ratio=lots:"),
    ({"kv_treshold": 0.2}, "--model_args kv_treshold=0.2: sharpv has no setting 'kv_treshold'; its settings: keep_ratio"),
    ({"method": "fastv", "layer": -1}, "--model_args layer=-1:"),
    ({"method": "dense", "keep_ratio": 0.2}, "--model_args keep_ratio=0.2: dense keeps every token"),
    ({"kv_mode": "sometimes"}, "--model_args kv_mode=sometimes: kv_mode must be one of withdraw, layerwise"),
    ({"max_frames_num": 0}, "--model_args max_frames_num=0: must be an integer >= 1"),
    ({"max_frames_num": 8, "max_num_frames": 8}, "max_frames_num and max_num_frames are the same setting"),
    ({"dtype": "fp8"}, "--model_args dtype must be one of auto"),
    ({"device": "tpu"}, "--model_args device must be cpu"),
    ({"attn_implementation": "flash"}, "--model_args attn_implementation=flash: must be one of sdpa"),
    ({"pretrained": "/nowhere/model"}, "--model_args pretrained=/nowhere/model: no such folder"),
]


@pytest.mark.parametrize("args, start", BAD, ids=[str(a) for a, _ in BAD])
def test_bad_model_args_are_one_line_naming_the_value(args, start):
    with pytest.raises(SharpVError) as info:
        parse_model_args(args)
    message = str(info.value)
    assert start in message and "\n" not in message


def test_an_unsupported_family_is_refused_from_its_config_alone(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))  # no weights at all
    with pytest.raises(SharpVError, match=r"--model_args pretrained=.*model_type 'llama' is not supported; supported families"):
        parse_model_args({"pretrained": str(tmp_path)})
    (tmp_path / "config.json").unlink()
    with pytest.raises(SharpVError, match="has no config.json"):
        parse_model_args({"pretrained": str(tmp_path)})


def test_a_hub_repo_id_that_cannot_be_fetched_is_one_line(monkeypatch):
    import huggingface_hub

    def offline(*_a, **_k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nmore")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(SharpVError) as info:
        parse_model_args({"pretrained": "llava-hf/llava-onevision-qwen2-7b-ov-hf"})
    assert str(info.value).startswith("--model_args pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf: not a local "
                                      "folder, and its config.json could not be fetched")
    assert "\n" not in str(info.value)


def test_model_keys_and_method_settings_do_not_collide():
    for cls in METHODS.values():
        assert not {f.name for f in fields(cls.config_class)} & set(MODEL_KEYS)


# --- task folders ---------------------------------------------------------------------------------
def _load_yaml(path: Path) -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))
    return yaml.load(path.read_text(), Loader=Loader)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "syn"
    assert main(["export-synthetic", str(out), "--n", "12", "--seed", "7"]) == 0
    return out


def test_export_synthetic_writes_a_task_lmms_eval_can_read(exported):
    cfg = _load_yaml(exported / "sharpv_synthetic.yaml")
    assert cfg["task"] == "sharpv_synthetic" and cfg["output_type"] == "generate_until"
    assert cfg["dataset_path"] == "json" and cfg["dataset_kwargs"] == {"data_files": {"test": "sharpv_synthetic.jsonl"}}
    assert cfg["test_split"] == "test"
    assert cfg["doc_to_visual"] == ("function", "sharpv_synthetic_utils.doc_to_visual")
    assert cfg["generation_kwargs"] == {"max_new_tokens": 8, "temperature": 0, "do_sample": False, "num_beams": 1, "until": []}
    metrics = [m["metric"] for m in cfg["metric_list"]]
    types = sorted({ex.type for ex in load_jsonl(exported / "data.jsonl")})
    assert metrics == ["accuracy", *(f"accuracy_{t}" for t in types)] and len(types) == 6
    rows = [json.loads(line) for line in (exported / "sharpv_synthetic.jsonl").read_text().splitlines()]
    source = load_jsonl(exported / "data.jsonl")
    assert [r["id"] for r in rows] == [ex.id for ex in source]
    assert all(not Path(r["video"]).is_absolute() and (exported / r["video"]).is_file() for r in rows)
    # the task's own data file is a `sharpv eval --data` dataset too
    assert [(e.id, e.prompt(), e.answer) for e in load_jsonl(exported / "sharpv_synthetic.jsonl")] == \
        [(e.id, e.prompt(), e.answer) for e in source]


def test_task_functions_ask_and_score_what_sharpv_eval_does(tmp_path, exported):
    clips = tmp_path / "data"
    shutil.copytree(exported / "videos", clips / "clips")
    rows = [
        {"video": "clips/7-0.mp4", "question": "What moves?", "options": ["a square", "a circle"], "answer": "B", "id": 3},
        {"video": "clips/7-1.mp4", "question": "Which colour?", "answer": "red", "type": "colour"},
    ]
    (clips / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task_dir = tmp_path / "tasks"
    assert main(["lmms-eval-task", str(clips / "mine.jsonl"), str(task_dir), "--name", "my_set"]) == 0
    examples = load_jsonl(clips / "mine.jsonl")
    fns = TaskFunctions(task_dir / "my_set.jsonl")
    docs = [json.loads(line) for line in (task_dir / "my_set.jsonl").read_text().splitlines()]
    assert docs[0]["video"] == "../data/clips/7-0.mp4" and docs[0]["id"] == "3"
    for doc, ex in zip(docs, examples):
        assert fns.doc_to_text(doc) == ex.prompt()
        assert fns.doc_to_visual(doc) == [str(task_dir / doc["video"])] and Path(fns.doc_to_visual(doc)[0]).is_file()
        for said in ("B", "(b) a circle", "a circle", "A", "red", "blue", ""):
            got = fns.process_results(doc, [said])
            assert got["accuracy"] == float(is_correct(said, ex))
            assert got[f"accuracy_{ex.type}"] == got["accuracy"]
            assert all(v is None for k, v in got.items() if k not in ("accuracy", f"accuracy_{ex.type}"))
    assert "A. a square\nB. a circle" in fns.doc_to_text(docs[0])
    assert fns.doc_to_text(docs[1], {"pre_prompt": "Q: ", "post_prompt": " A:"}) == "Q: Which colour? A:"
    assert TaskFunctions.mean([1.0, None, 0.0, 1.0]) == pytest.approx(2 / 3)


def test_a_task_folder_moves_as_a_whole(tmp_path, exported):
    moved = tmp_path / "elsewhere"
    shutil.copytree(exported, moved)
    fns = TaskFunctions(moved / "sharpv_synthetic.jsonl")
    doc = json.loads((moved / "sharpv_synthetic.jsonl").read_text().splitlines()[0])
    assert fns.doc_to_visual(doc) == [str(moved / doc["video"])]
    (moved / doc["video"]).unlink()
    with pytest.raises(SharpVError, match="does not exist"):
        fns.doc_to_visual(doc)


def test_task_commands_refuse_with_one_line_and_write_nothing(tmp_path, exported, capsys):
    before = sorted(p.name for p in exported.iterdir())
    stamp = (exported / "sharpv_synthetic.yaml").read_text()
    assert main(["export-synthetic", str(exported), "--n", "3"]) == 2
    assert main(["lmms-eval-task", str(exported / "data.jsonl"), str(exported), "--name", "sharpv_synthetic"]) == 2
    assert main(["lmms-eval-task", str(exported / "data.jsonl"), str(tmp_path), "--name", "My-Set"]) == 2
    assert main(["lmms-eval-task", str(tmp_path / "none.jsonl"), str(tmp_path)]) == 2
    (tmp_path / "bad.jsonl").write_text('{"video": "x.mp4"}\n')
    assert main(["lmms-eval-task", str(tmp_path / "bad.jsonl"), str(tmp_path / "t")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 5 and all(line.startswith("error: ") for line in errors)
    assert "exists; pass another folder or --overwrite" in errors[0] and "task name is lower-case" in errors[2]
    assert sorted(p.name for p in exported.iterdir()) == before
    assert (exported / "sharpv_synthetic.yaml").read_text() == stamp
    assert not (tmp_path / "t").exists()
    with pytest.raises(SharpVError, match="exists"):
        write_task(exported / "data.jsonl", exported, "sharpv_synthetic")
