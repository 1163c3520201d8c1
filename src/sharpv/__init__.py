"""sharpv: information-aware visual token pruning for video LLMs (SharpV, arXiv 2511.08003)."""

from sharpv.config import SharpVConfig
from sharpv.errors import SharpVError, UnsupportedModelError
from sharpv.runtime import AppliedSharpV, SharpV, apply
from sharpv.stats import PruningStats, VideoStats

__version__ = "0.1.0"

__all__ = [
    "AppliedSharpV",
    "PruningStats",
    "SharpV",
    "SharpVConfig",
    "SharpVError",
    "UnsupportedModelError",
    "VideoStats",
    "__version__",
    "apply",
]
