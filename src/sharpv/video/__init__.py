"""Video input: decoding, frame sampling and model-input preparation."""

from sharpv.video.decode import (
    FewerFramesWarning, FrameResize, SampledVideo, VideoReadWarning, check_video, iter_frames, read_video, uniform_indices,
)
from sharpv.video.processing import TorchVideoInputs, build_inputs, has_torchvision, load_processor, read_video_for

__all__ = [
    "FewerFramesWarning", "FrameResize", "SampledVideo", "VideoReadWarning", "check_video", "iter_frames", "TorchVideoInputs", "build_inputs", "has_torchvision",
    "load_processor", "read_video", "read_video_for", "uniform_indices",
]
