"""lmms-eval task folders made from sharpv datasets, runnable with no network.

:func:`write_task` turns a JSONL file in ``sharpv eval --data``'s layout (every line checked, every
video found, as ``sharpv eval`` does) into a folder lmms-eval reads with ``--include_path``:

- ``NAME.jsonl``: the rows, normalised (``id``, ``video`` relative to the folder, ``question``,
  ``answer``, ``options`` (a list or null), ``type``; ``sharpv eval --data`` reads it too), read by lmms-eval through the ``json`` builder of
  ``datasets`` (local, offline; lmms-eval resolves the file against the YAML's folder);
- ``NAME.yaml``: a ``generate_until`` task, greedy, ``max_new_tokens: 8`` as ``sharpv eval``;
- ``NAME_utils.py``: three lines that bind :class:`TaskFunctions` to that folder.

The task asks exactly what ``sharpv eval`` asks (:meth:`sharpv.harness.evaluate.Example.prompt`)
and scores with the same rule (:func:`sharpv.harness.evaluate.is_correct`): metric ``accuracy``
and ``accuracy_<type>`` per question type. The folder moves as a whole (every path in it is
relative); it needs sharpv importable where lmms-eval runs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sharpv.errors import SharpVError
from sharpv.harness.evaluate import Example, is_correct, load_jsonl

#: the generation settings of ``sharpv eval`` (greedy, 8 new tokens); ``until: []`` keeps the whole
#: answer, which is what ``sharpv eval`` scores
GENERATION = {"max_new_tokens": 8, "temperature": 0, "do_sample": False, "num_beams": 1, "until": []}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def check_task_name(name: str) -> str:
    if not _NAME.match(name):
        raise SharpVError(f"--name {name!r}: a task name is lower-case letters, digits and _, starting with a letter")
    return name


def _row(example: Example, folder: Path) -> dict[str, Any]:
    video = Path(example.video).resolve()
    try:
        where = os.path.relpath(video, folder.resolve())
    except ValueError:  # another drive (Windows): keep it absolute
        where = str(video)
    return {"id": example.id, "video": where, "question": example.question, "answer": example.answer,
            "options": example.options, "type": example.type}


def _yaml(name: str, types: list[str]) -> str:
    metrics = ["accuracy", *(f"accuracy_{t}" for t in types)]
    lines = [
        f"# lmms-eval task written by sharpv: lmms-eval --include_path <this folder> --tasks {name} --model sharpv ...",
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {name}.jsonl",
        "test_split: test",
        "output_type: generate_until",
        f"doc_to_visual: !function {name}_utils.doc_to_visual",
        f"doc_to_text: !function {name}_utils.doc_to_text",
        "doc_to_target: answer",
        "generation_kwargs:",
        *(f"  {k}: {json.dumps(v)}" for k, v in GENERATION.items()),
        f"process_results: !function {name}_utils.process_results",
        "metric_list:",
    ]
    for metric in metrics:
        lines += [f"  - metric: {metric}", f"    aggregation: !function {name}_utils.mean", "    higher_is_better: true"]
    lines += ["metadata:", "  version: 1"]
    return "\n".join(lines) + "\n"


def _utils(name: str) -> str:
    return (f'"""lmms-eval functions of task {name}, written by sharpv: they read {name}.jsonl next to this '
            'file\nthe way `sharpv eval --data` reads its JSONL (see sharpv.integrations.lmms_eval.task)."""\n\n'
            "from pathlib import Path\n\n"
            "from sharpv.integrations.lmms_eval.task import TaskFunctions\n\n"
            f'_task = TaskFunctions(Path(__file__).with_name("{name}.jsonl"))\n'
            "doc_to_visual = _task.doc_to_visual\n"
            "doc_to_text = _task.doc_to_text\n"
            "process_results = _task.process_results\n"
            "mean = _task.mean\n")


def task_files(name: str) -> list[str]:
    return [f"{name}.yaml", f"{name}_utils.py", f"{name}.jsonl"]


def write_task(data: Path, out_dir: Path, name: str, *, overwrite: bool = False) -> Path:
    """Write the lmms-eval task ``name`` for the JSONL dataset ``data`` into ``out_dir``; returns the
    YAML's path. Refuses (one line, nothing written) to replace the task's files unless ``overwrite``."""
    check_task_name(name)
    examples = load_jsonl(Path(data))
    out_dir = Path(out_dir)
    existing = [f for f in task_files(name) if (out_dir / f).exists()]
    if existing and not overwrite:
        raise SharpVError(f"{out_dir / existing[0]} exists; pass another folder or name, or --overwrite (nothing was written)")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [_row(ex, out_dir) for ex in examples]
    types = sorted({ex.type for ex in examples})
    (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out_dir / f"{name}_utils.py").write_text(_utils(name), encoding="utf-8")
    path = out_dir / f"{name}.yaml"
    path.write_text(_yaml(name, types if len(types) > 1 else []), encoding="utf-8")
    return path


class TaskFunctions:
    """lmms-eval's per-document functions for a task folder's JSONL file (see the module docstring)."""

    def __init__(self, data: Path):
        self.folder = Path(data).parent
        self.types: list[str] = []
        if Path(data).is_file():
            seen = {json.loads(line).get("type", "all") for line in Path(data).read_text(encoding="utf-8").splitlines() if line.strip()}
            self.types = sorted(seen) if len(seen) > 1 else []

    def example(self, doc: dict[str, Any]) -> Example:
        return Example(str(doc["id"]), doc["question"], doc["answer"], video=self.folder / doc["video"],
                       options=list(doc.get("options") or []) or None, type=str(doc.get("type") or "all"))

    def doc_to_visual(self, doc: dict[str, Any]) -> list[str]:
        video = self.folder / doc["video"]
        if not video.exists():
            raise SharpVError(f"video {video} (doc {doc.get('id')}) does not exist; the task folder's paths are relative to it")
        return [str(video)]

    def doc_to_text(self, doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
        kw = lmms_eval_specific_kwargs or {}
        return f"{kw.get('pre_prompt', '')}{self.example(doc).prompt()}{kw.get('post_prompt', '')}"

    def process_results(self, doc: dict[str, Any], results: list[str]) -> dict[str, float | None]:
        example = self.example(doc)
        right = float(is_correct(results[0], example))
        return {"accuracy": right, **{f"accuracy_{t}": right if t == example.type else None for t in self.types}}

    @staticmethod
    def mean(values: list[float | None]) -> float:
        """The mean of the values given (None: a question of another type)."""
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else float("nan")
