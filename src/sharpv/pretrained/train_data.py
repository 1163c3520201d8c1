"""Data for ``sharpv model train``: multi-turn conversations about synthetic videos, their token ids
and answer labels, per-token probe labels, and the frozen vision tower's features cached on disk.

The video features follow the model's own path exactly (``get_video_features`` of transformers'
LLaVA-OneVision), split where the trainable part starts:

- :func:`vision_features`: the frozen vision tower on ``pixel_values_videos`` (the processor's
  own output), the configured layer's hidden states, the class token dropped under the "default"
  strategy. Cached once per training video (float16, :class:`FeatureCache`).
- :func:`video_features`: the projector, LLaVA-OneVision's 2 x 2 video pooling
  (``apply_pooling``) and the ``image_newline`` token, computed every step by the model's own modules.

``video_features(model, vision_features(model, pixels))`` equals
``model.model.get_video_features(pixels, ...).pooler_output`` (tested).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sharpv.errors import SharpVError
from sharpv.synthetic.dataset import QAItem
from sharpv.synthetic.render import object_mask
from sharpv.synthetic.scene import COLOURS, SHAPES

_COLOURS = list(COLOURS)


# ------------------------------------------------------------------------------------------------
# the model's feature path, split at the frozen tower


def check_feature_layout(config) -> None:
    if not isinstance(config.vision_feature_layer, int):
        raise SharpVError("training needs one vision feature layer (vision_feature_layer an int)")
    if config.vision_feature_select_strategy not in ("default", "full"):
        raise SharpVError(f"unknown vision_feature_select_strategy {config.vision_feature_select_strategy!r}")


@torch.no_grad()
def vision_features(model, pixel_values_videos: torch.Tensor) -> torch.Tensor:
    """(B, T, patches, vision hidden): what the frozen tower gives the projector."""
    cfg = model.config
    check_feature_layout(cfg)
    b, t = pixel_values_videos.shape[:2]
    out = model.model.vision_tower(pixel_values_videos.flatten(0, 1), output_hidden_states=True, return_dict=True)
    x = out.hidden_states[cfg.vision_feature_layer]
    if cfg.vision_feature_select_strategy == "default":
        x = x[:, 1:]
    return x.reshape(b, t, x.shape[1], x.shape[2])


def video_features(model, cached: torch.Tensor) -> torch.Tensor:
    """(B, T * pooled tokens + 1, text hidden): the projector, the 2 x 2 video pooling and the
    newline token on :func:`vision_features`, by the model's own modules (trainable)."""
    b, t = cached.shape[:2]
    x = model.model.multi_modal_projector(cached.flatten(0, 1))
    x = model.model.apply_pooling(x)
    x = x.reshape(b, t * x.shape[1], -1)
    newline = model.model.image_newline[None, None, :].repeat(b, 1, 1).to(x.device)
    return torch.cat((x, newline), dim=1)


def pooled_side(config) -> int:
    """Pooled visual tokens per frame side (LLaVA-OneVision's video pooling halves the patch grid)."""
    grid = config.vision_config.image_size // config.vision_config.patch_size
    return math.ceil(grid / 2)


# ------------------------------------------------------------------------------------------------
# conversations -> token ids and answer labels


@dataclass
class Encoded:
    """One conversation's tokens: ``ids`` (visual placeholders expanded), and per answer token
    (the answer's tokens and the end-of-turn token) the position that predicts it and its id;
    ``turn`` gives each label's turn index."""

    ids: list[int]
    positions: list[int]
    targets: list[int]
    turn: list[int]


class Encoder:
    """Chat-formats conversations the way inference prompts are made (``build_inputs``: the video
    first in the first user turn, then the question; the processor's placeholder expansion) and
    finds the answer tokens."""

    def __init__(self, processor, video_tokens: int):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.video_tokens = video_tokens
        self.video = getattr(self.tokenizer, "video_token", None) or "<video>"
        self.end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if self.end is None or self.end == self.tokenizer.unk_token_id:
            raise SharpVError("the tokenizer has no <|im_end|> token (ChatML)")

    def _ids(self, text: str) -> list[int]:
        text = text.replace(self.video, self.video * self.video_tokens, 1)
        return self.tokenizer(text)["input_ids"]

    @staticmethod
    def messages(turns: list[tuple[str, str]], upto: int | None = None) -> list[dict]:
        """Chat messages of ``(question, answer)`` turns; with ``upto``, up to that turn's question."""
        out: list[dict] = []
        for i, (q, a) in enumerate(turns):
            content = [{"type": "video"}, {"type": "text", "text": q}] if i == 0 else [{"type": "text", "text": q}]
            out.append({"role": "user", "content": content})
            if upto is not None and i == upto:
                return out
            out.append({"role": "assistant", "content": a})
        return out

    def prompt(self, question: str) -> list[int]:
        """A single-question prompt, as ``build_inputs`` makes it (the generation prompt added)."""
        text = self.processor.apply_chat_template(self.messages([(question, "")], upto=0), add_generation_prompt=True)
        return self._ids(text)

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"]

    def encode(self, turns: list[tuple[str, str]]) -> Encoded:
        text = self.processor.apply_chat_template(self.messages(turns), add_generation_prompt=False)
        ids = self._ids(text)
        positions, targets, turn = [], [], []
        for k, (_, answer) in enumerate(turns):
            prefix = self.processor.apply_chat_template(self.messages(turns, upto=k), add_generation_prompt=True)
            start = len(self._ids(prefix))
            want = self.answer_ids(answer) + [self.end]
            if ids[start : start + len(want)] != want:
                raise SharpVError(f"the chat template does not place answer {answer!r} where expected")
            positions += list(range(start - 1, start - 1 + len(want)))
            targets += want
            turn += [k] * len(want)
        return Encoded(ids, positions, targets, turn)

    def single(self, question: str, answer: str) -> Encoded:
        """The inference prompt of ``question`` followed by the answer and the end token
        (teacher-forced scoring: greedy decoding gives ``answer`` exactly when every label is the argmax)."""
        ids = self.prompt(question)
        want = self.answer_ids(answer) + [self.end]
        start = len(ids)
        return Encoded(ids + want, list(range(start - 1, start - 1 + len(want))), want, [0] * len(want))


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L), right-padded
    attention_mask: torch.Tensor
    rows: torch.Tensor  # (N,) label row
    positions: torch.Tensor  # (N,) the position predicting the label
    targets: torch.Tensor  # (N,)
    label_group: torch.Tensor  # (N,) conversation turn index, unique over the batch


def collate(encoded: list[Encoded], pad: int) -> Batch:
    width = max(len(e.ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    rows, pos, tgt, group = [], [], [], []
    groups = 0
    for r, e in enumerate(encoded):
        ids[r, : len(e.ids)] = torch.tensor(e.ids)
        mask[r, : len(e.ids)] = 1
        rows += [r] * len(e.positions)
        pos += e.positions
        tgt += e.targets
        group += [groups + t for t in e.turn]
        groups += max(e.turn) + 1 if e.turn else 0
    t = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return Batch(ids, mask, t(rows), t(pos), t(tgt), t(group))


# ------------------------------------------------------------------------------------------------
# per-token probe labels (auxiliary loss on the projector's output)


def probe_labels(item: QAItem, side: int) -> np.ndarray:
    """(T, side * side, 2) int: the shape (0 = none) and colour (0 = none) covering each pooled
    token's cell: the object covering the largest part of it, if that is at least 12%."""
    scene = item.scene
    size = item.size
    edges = np.linspace(0, size, side + 1).round().astype(int)
    out = np.zeros((scene.frames, side * side, 2), dtype=np.int64)
    for t in range(scene.frames):
        best = np.zeros(side * side)
        for obj in scene.objects:
            if not obj.visible[t]:
                continue
            mask = object_mask(obj, t, size).astype(np.float64)
            cover = np.add.reduceat(np.add.reduceat(mask, edges[:-1], axis=0), edges[:-1], axis=1)
            cover = (cover / np.outer(np.diff(edges), np.diff(edges))).reshape(-1)
            take = (cover >= 0.12) & (cover > best)
            best = np.where(take, cover, best)
            out[t, take, 0] = SHAPES.index(obj.shape) + 1
            out[t, take, 1] = _COLOURS.index(obj.colours[t]) + 1
    return out


class Probe(torch.nn.Module):
    """Linear heads on the visual tokens the LLM receives: shape, colour, row and column of each
    pooled cell (training only, discarded afterwards): dense supervision for the projector."""

    def __init__(self, hidden: int, side: int):
        super().__init__()
        self.side = side
        self.head = torch.nn.Linear(hidden, (len(SHAPES) + 1) + (len(COLOURS) + 1) + 2 * side)

    def loss(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # feats (B, T * side^2, H) without the newline token, labels (B, T, side^2, 2)
        b, t, cells = labels.shape[:3]
        logits = self.head(feats.float()).view(b, t, cells, -1)
        s, c = len(SHAPES) + 1, len(COLOURS) + 1
        idx = torch.arange(cells)
        rows, cols = (idx // self.side).expand(b, t, -1), (idx % self.side).expand(b, t, -1)
        ce = torch.nn.functional.cross_entropy
        return (ce(logits[..., :s].flatten(0, 2), labels[..., 0].flatten())
                + ce(logits[..., s : s + c].flatten(0, 2), labels[..., 1].flatten())
                + 0.25 * ce(logits[..., s + c : s + c + self.side].flatten(0, 2), rows.flatten())
                + 0.25 * ce(logits[..., s + c + self.side :].flatten(0, 2), cols.flatten()))


#: the words :class:`WordProbe` ties visual tokens to: the answer words of the question types
PLACE_WORDS = {"horizontal": ("left", "center", "right"), "vertical": ("top", "center", "bottom")}


def word_ids(encoder: "Encoder") -> dict[str, list[int]]:
    """Token ids of the word probe's words: colours and places as an answer starts with them, shapes
    as the questions name them (" circle", after a space: shapes are never an answer); one token each."""
    sets = {**PLACE_WORDS, "shape": SHAPES, "colour": tuple(_COLOURS)}
    out = {}
    for name, words in sets.items():
        ids = [encoder.tokenizer(f" {w}" if name == "shape" else w, add_special_tokens=False)["input_ids"] for w in words]
        if any(len(i) != 1 for i in ids):
            raise SharpVError(f"the word probe needs one-token words; the tokenizer splits some of {', '.join(words)}")
        out[name] = [i[0] for i in ids]
    return out


class WordProbe:
    """Ties each visual token to the language model's own (frozen) word embeddings, no parameters
    of its own: logits are 10 x the cosine between the token and each word's input embedding, over
    small word sets. Every cell is tied to its place (horizontal "left" / "center" / "right" and
    vertical "top" / "center" / "bottom", by thirds of the pooled grid); a cell an object covers also
    to its colour and shape word. Like LLaVA's caption alignment, it puts what the answers name
    into the directions the language model already reads, so "where is the X" can be answered the
    way "what color is the X" is: from the X's own tokens."""

    SCALE = 10.0

    def __init__(self, embeddings: torch.Tensor, ids: dict[str, list[int]], side: int):
        self.words = {k: embeddings[v].detach().float() for k, v in ids.items()}
        self.side = side
        cells = torch.arange(side * side)
        self.place = {"horizontal": (cells % side) * 3 // side, "vertical": (cells // side) * 3 // side}

    def _ce(self, feats: torch.Tensor, words: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not bool((labels >= 0).any()):
            return feats.sum() * 0.0
        logits = self.SCALE * torch.nn.functional.normalize(feats, dim=-1) @ torch.nn.functional.normalize(words, dim=-1).T
        return torch.nn.functional.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=-1)

    def loss(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # feats (B, T * side^2, H) without the newline token, labels (B, T, side^2, 2) as probe_labels gives
        b, t, cells = labels.shape[:3]
        x = feats.float().view(b, t, cells, -1)
        total = sum(self._ce(x, self.words[k], self.place[k].expand(b, t, -1)) for k in self.place)
        return total + self._ce(x, self.words["shape"], labels[..., 0] - 1) + self._ce(x, self.words["colour"], labels[..., 1] - 1)


# ------------------------------------------------------------------------------------------------
# the feature cache


def pixels_of(processor, item: QAItem) -> torch.Tensor:
    """(T, 3, H, W): the processor's ``pixel_values_videos`` for ``item``'s frames (as inference)."""
    from sharpv.video import SampledVideo, build_inputs

    frames = item.frames()
    video = SampledVideo(frames, list(range(len(frames))), len(frames), 8.0)
    return build_inputs(processor, item.question, video)["pixel_values_videos"][0]


class FeatureCache:
    """Vision-tower features of a list of items in float16 shards of ``shard`` videos
    (``{prefix}-NNNNN.npy``, memory-mapped when read), built once and resumable: a shard is written
    whole (to a temporary name, then renamed), so an interrupted build goes on at the next shard.
    ``{prefix}.json`` holds what the features depend on; other settings rebuild them."""

    def __init__(self, folder: Path, prefix: str, key: dict, count: int, shard: int = 32):
        self.folder, self.prefix, self.key, self.count, self.shard = Path(folder), prefix, key, count, shard
        self._maps: dict[int, np.ndarray] = {}

    def _shard_path(self, i: int) -> Path:
        return self.folder / f"{self.prefix}-{i:05d}.npy"

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard)

    def complete(self) -> bool:
        return self._key_matches() and all(self._shard_path(i).exists() for i in range(self.shards))

    def _key_matches(self) -> bool:
        path = self.folder / f"{self.prefix}.json"
        return path.exists() and json.loads(path.read_text()) == {**self.key, "count": self.count, "shard": self.shard}

    def build(self, model, processor, items: list[QAItem], log: Callable[[str], None] = lambda _: None,
              on_shard: Callable[[float], bool] = lambda _: True, chunk: int = 4) -> bool:
        """Compute missing shards; ``on_shard(seconds)`` after each (False stops). True when complete."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._key_matches():
            for old in self.folder.glob(f"{self.prefix}-*.npy"):
                old.unlink()
            (self.folder / f"{self.prefix}.json").write_text(
                json.dumps({**self.key, "count": self.count, "shard": self.shard}, indent=1))
        todo = [i for i in range(self.shards) if not self._shard_path(i).exists()]
        done = self.count - sum(len(range(i * self.shard, min(self.count, (i + 1) * self.shard))) for i in todo)
        for i in todo:
            start = time.monotonic()
            lo, hi = i * self.shard, min(self.count, (i + 1) * self.shard)
            parts = []
            for j in range(lo, hi, chunk):
                pixels = torch.stack([pixels_of(processor, it) for it in items[j : min(hi, j + chunk)]])
                parts.append(vision_features(model, pixels.to(model.dtype)).to(torch.float16).numpy())
            arr = np.concatenate(parts)
            tmp = self._shard_path(i).with_suffix(".tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr)
            tmp.replace(self._shard_path(i))
            seconds = time.monotonic() - start
            done += hi - lo
            left = (self.count - done) * seconds / (hi - lo)
            log(f"{self.prefix} features: {done}/{self.count} videos ({seconds / (hi - lo):.2f} s per video, "
                f"about {left / 60:.0f} min left)")
            if not on_shard(seconds):
                return False
        return True

    def get(self, index: int) -> np.ndarray:
        shard = index // self.shard
        if shard not in self._maps:
            self._maps[shard] = np.load(self._shard_path(shard), mmap_mode="r")
        return np.asarray(self._maps[shard][index - shard * self.shard])

    def batch(self, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.get(i) for i in indices]).astype(np.float32))
