"""Seeing what a pruning method keeps: ``sharpv viz`` and ``sharpv answer --viz``.

- :mod:`sharpv.viz.token_maps`: kept-token maps (numpy + Pillow on a (T, f) keep mask and frames);
- :mod:`sharpv.viz.charts`: the share of each frame the LLM computes, the visual tokens per LLM
  layer and SharpV's stage-2 curve (matplotlib, Agg), one style per method;
- :mod:`sharpv.viz.page`: the self-contained HTML page (inline images, a frame slider);
- :mod:`sharpv.viz.job`: running the methods on a video with the real runtime and writing it all;
- :mod:`sharpv.viz.browser`: a headless Chromium over its DevTools pipe (tests and screenshots only).
"""

from sharpv.viz.job import (
    DEFAULT_QUESTION,
    VizResult,
    VizRow,
    answer_with_viz,
    collect_rows,
    encode_video,
    run_viz_job,
    token_grid,
    viz_for_questions,
    write_viz,
)
from sharpv.viz.token_maps import (
    DIM,
    cell_shape,
    cell_size,
    dim_dropped,
    frame_panel,
    grid_image_size,
    token_map_grid,
)

__all__ = [
    "DEFAULT_QUESTION", "DIM", "VizResult", "VizRow", "answer_with_viz", "cell_shape", "cell_size", "collect_rows", "dim_dropped",
    "encode_video", "frame_panel", "grid_image_size", "run_viz_job", "token_grid", "token_map_grid",
    "viz_for_questions", "write_viz",
]
