"""sharpv: information-aware visual token pruning for video LLMs (SharpV, arXiv 2511.08003)."""

from sharpv.errors import SharpVError, UnsupportedModelError
from sharpv.methods import METHODS, PruningMethod, SharpV, SharpVConfig, create, from_config, load_config, method_names
from sharpv.runtime import AppliedMethod, StageTwoEarlyWarning, apply
from sharpv.stats import PruningStats, VideoStats

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AppliedMethod",
    "PruningMethod",
    "create",
    "from_config",
    "load_config",
    "method_names",
    "PruningStats",
    "SharpV",
    "SharpVConfig",
    "SharpVError",
    "StageTwoEarlyWarning",
    "UnsupportedModelError",
    "VideoStats",
    "__version__",
    "apply",
]
