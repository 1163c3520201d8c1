"""Video that arrives in chunks: incremental prefill into one cache."""

from sharpv.streaming.prefill import ChunkedPrefill

__all__ = ["ChunkedPrefill"]
