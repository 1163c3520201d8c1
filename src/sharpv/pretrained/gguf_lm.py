"""A language model and its tokenizer from a GGUF file, read by transformers (``gguf_file=``), which
dequantizes every tensor to float. Needs the ``gguf`` and ``accelerate`` packages."""

from __future__ import annotations

from pathlib import Path

import torch


def load_gguf_lm(path: Path):
    """``(model, tokenizer)`` of the GGUF file ``path``: a float32 ``*ForCausalLM`` in eval mode and
    its tokenizer (with the chat template the file carries)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(Path(path).parent), Path(path).name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model.eval(), tokenizer


def plain_text_config(config) -> dict:
    """The LM's config as a plain dict for a new checkpoint: without the GGUF origin (which would
    make ``from_pretrained`` look for a GGUF file) and the source's name."""
    out = config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version", "dtype",
                "torch_dtype", "architectures"):
        out.pop(key, None)
    return out
