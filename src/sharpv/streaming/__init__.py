"""Video that arrives in chunks: incremental prefill into one cache, and live (online) use."""

from sharpv.streaming.live import LiveAnswer, LiveVideo
from sharpv.streaming.prefill import ChunkedPrefill

__all__ = ["ChunkedPrefill", "LiveAnswer", "LiveVideo"]
