"""Tiny random-weight video LLMs with their processors, for smoke tests, bug reports and CI.

``build_tiny_model(dir, arch)`` writes a checkpoint that ``from_pretrained`` loads like any real
one: config, safetensors weights, a small word-level tokenizer built locally with ``tokenizers``,
image and video processor configs and a chat template. Nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

ARCHES = ("llava-onevision", "qwen2.5-vl", "qwen3-vl")

#: every tiny model takes 64 x 64 frames; LLaVA-OneVision gets 16 tokens per frame,
#: the Qwen models 16 tokens per temporal step (two frames)
FRAME_SIZE = 64

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'video' %}{{ VIDEO }}"
    "{% elif content['type'] == 'image' %}{{ IMAGE }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class ProcessorParts:
    """A processor's parts, written the way ``ProcessorMixin.save_pretrained`` lays them out.

    The processor object itself is not built: transformers' video processors need torchvision,
    which has no CPU wheel, so the video processor's config is written as plain JSON.
    """

    tokenizer: object
    image_processor: object
    processor: dict
    video: dict
    chat_template: str

    def save(self, out: Path) -> None:
        self.tokenizer.save_pretrained(out)
        self.image_processor.save_pretrained(out)
        (out / "processor_config.json").write_text(json.dumps(self.processor, indent=2))
        (out / "video_preprocessor_config.json").write_text(json.dumps(self.video, indent=2))
        (out / "chat_template.jinja").write_text(self.chat_template)


_WORDS = (
    "the a an is are what which where when who how many color colour of in on at to and or video frame "
    "object objects circle square triangle red green blue yellow white black left right top bottom "
    "center up down moves moving appears disappears first last one two three four five yes no "
    "describe answer question seconds user assistant system"
).split()


def word_tokenizer(special: list[str], words: tuple[str, ...] | list[str] = _WORDS):
    """A word-level tokenizer over ``words`` (plus digits and punctuation) built locally with ``tokenizers``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<unk>", "<|endoftext|>", *special])}
    for word in list(words) + [str(d) for d in range(10)] + list(".,?!:<>-"):
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=special,
    )
    tok.add_special_tokens({"additional_special_tokens": special})
    return tok


def build_llava_onevision(seed: int, words=_WORDS, vision: dict | None = None, text: dict | None = None):
    """A random-weight LLaVA-OneVision model (SigLIP + Qwen2) over 64 x 64 frames and its processor parts.

    ``vision`` and ``text`` override the tiny SigLIP and Qwen2 sizes; ``words`` is the tokenizer's vocabulary.
    """
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tok = word_tokenizer(["<|im_start|>", "<|im_end|>", "<image>", "<video>"], words)
    config = LlavaOnevisionConfig(
        vision_config={**dict(
            model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=FRAME_SIZE, patch_size=8,
        ), **(vision or {})},
        text_config={**dict(
            model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=4096,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        ), **(text or {})},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=[[FRAME_SIZE, FRAME_SIZE]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    size = {"height": FRAME_SIZE, "width": FRAME_SIZE}
    parts = ProcessorParts(
        tokenizer=tok,
        image_processor=LlavaOnevisionImageProcessorPil(size=size, image_grid_pinpoints=[[FRAME_SIZE, FRAME_SIZE]]),
        processor=dict(
            processor_class="LlavaOnevisionProcessor",
            num_image_tokens=(FRAME_SIZE // 8) ** 2,
            vision_feature_select_strategy="full",
            video_token="<video>",
            image_token="<image>",
        ),
        video=dict(
            video_processor_type="LlavaOnevisionVideoProcessor", size=size, resample=3, do_resize=True,
            do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=_CLIP_MEAN, image_std=_CLIP_STD,
            do_convert_rgb=True, do_sample_frames=False,
        ),
        chat_template=_CHAT_TEMPLATE.replace("{{ VIDEO }}", "<video>").replace("{{ IMAGE }}", "<image>"),
    )
    return model, parts


def _text_heads(head_dim: int) -> dict:
    """Attention heads of the 64-wide tiny LLM for ``head_dim`` (16: 4 heads, 2 KV heads; 32: 2
    heads, 1 KV head; vLLM's CPU attention kernel needs head_dim >= 32)."""
    if head_dim not in (16, 32):
        raise ValueError(f"head_dim must be 16 or 32, got {head_dim}")
    heads = 64 // head_dim
    return dict(num_attention_heads=heads, num_key_value_heads=max(1, heads // 2))


def _mrope(head_dim: int) -> list[int]:
    """M-RoPE sections (temporal, height, width) over head_dim / 2 rotary frequencies."""
    return [2, 3, 3] if head_dim == 16 else [4, 6, 6]


def _qwen(seed: int, arch: str, head_dim: int = 16):
    tok = word_tokenizer(
        ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    )
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
    ]}
    text = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, **_text_heads(head_dim),
        vocab_size=len(tok), max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None,
    )
    template = _CHAT_TEMPLATE.replace("{{ VIDEO }}", "<|vision_start|><|video_pad|><|vision_end|>").replace(
        "{{ IMAGE }}", "<|vision_start|><|image_pad|><|vision_end|>"
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    pixels = {"shortest_edge": FRAME_SIZE * FRAME_SIZE, "longest_edge": FRAME_SIZE * FRAME_SIZE}
    video = dict(
        size=pixels, patch_size=8, merge_size=2, temporal_patch_size=2, resample=3, do_resize=True, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, image_mean=_CLIP_MEAN, image_std=_CLIP_STD, do_convert_rgb=True,
        do_sample_frames=False,
    )
    image_processor = Qwen2VLImageProcessorPil(size=pixels, patch_size=8, merge_size=2, temporal_patch_size=2)
    if arch == "qwen2.5-vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        config = Qwen2_5_VLConfig(
            vision_config=dict(
                depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8, spatial_merge_size=2,
                temporal_patch_size=2, window_size=32, out_hidden_size=64, fullatt_block_indexes=[1],
                tokens_per_second=2,
            ),
            text_config=dict(text, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope(head_dim)}),
            **ids,
        )
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
        processor = dict(processor_class="Qwen2_5_VLProcessor")
        video["video_processor_type"] = "Qwen2VLVideoProcessor"
    else:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        config = Qwen3VLConfig(
            vision_config=dict(
                depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8, spatial_merge_size=2,
                temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
            ),
            text_config=dict(
                text, head_dim=head_dim,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope(head_dim), "mrope_interleaved": True},
            ),
            **ids,
        )
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
        processor = dict(processor_class="Qwen3VLProcessor")
        # Qwen3-VL budgets pixels over the whole clip: allow 64 x 64 frames for up to 64 frames.
        video.update(video_processor_type="Qwen3VLVideoProcessor", size={"shortest_edge": 1, "longest_edge": 64 * FRAME_SIZE * FRAME_SIZE})
    parts = ProcessorParts(tokenizer=tok, image_processor=image_processor, processor=processor, video=video, chat_template=template)
    return model, parts


def build_tiny_model(out_dir: str | Path, arch: str, seed: int = 0, head_dim: int = 16) -> Path:
    """Write a tiny random-weight model of family ``arch`` and its processor to ``out_dir``.
    ``head_dim`` of the LLM's attention: 16 (default) or 32 (what vLLM's CPU kernel needs)."""
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, got {arch!r}")
    heads = _text_heads(head_dim)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if arch == "llava-onevision":
        model, parts = build_llava_onevision(seed, text=heads if head_dim != 16 else None)
    else:
        model, parts = _qwen(seed, arch, head_dim)
    model.generation_config.pad_token_id = parts.tokenizer.pad_token_id
    model.generation_config.eos_token_id = parts.tokenizer.eos_token_id
    model.save_pretrained(out)
    parts.save(out)
    return out
