"""sharpv as an lmms-eval model, as a plugin (``pip install "sharpv[lmms-eval]"``): no fork of lmms-eval.

lmms-eval 0.7 finds models of installed packages through the ``lmms_eval.models`` entry point;
sharpv's points at :func:`manifest`, which registers ``sharpv``
(:class:`sharpv.integrations.lmms_eval.model.SharpVLMM`)::

    lmms-eval --model sharpv \\
        --model_args pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf,method=sharpv,keep_ratio=0.2,max_frames_num=32 \\
        --tasks videomme,mvbench --batch_size 1

Every registered method and each of its settings is a ``--model_args`` key (see
:mod:`sharpv.integrations.lmms_eval.model_args`); a bad one stops the run before any weight loads,
with one line. Offline task folders (no hub): :mod:`sharpv.integrations.lmms_eval.task`, written by
``sharpv export-synthetic DIR`` and ``sharpv lmms-eval-task DATA.jsonl DIR``. Tested with
lmms-eval 0.7.3 (the extra pins 0.7.x).
"""

from __future__ import annotations

MODEL_CLASS = "sharpv.integrations.lmms_eval.model.SharpVLMM"


def manifest():
    """The ``lmms_eval.models`` entry point: the ``sharpv`` model (a "simple" lmms-eval model:
    it takes the task's prompt text and video file and builds the chat prompt itself)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="sharpv", simple_class_path=MODEL_CLASS)
