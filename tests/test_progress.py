"""Long jobs show progress in a log file too: rich draws nothing on a non-terminal console, so
JobProgress prints plain lines there (at most every ``every`` seconds, and at the end)."""

from __future__ import annotations

import io

from rich.console import Console

from sharpv.harness.progress import JobProgress


def _run(console: Console, every: float, steps: int = 5) -> None:
    with JobProgress(console, every=every) as progress:
        task = progress.add_task("eval: dense", total=steps)
        for _ in range(steps):
            progress.advance(task)


def test_a_log_file_gets_plain_lines_with_counts():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=False, width=200), every=0.0)
    lines = [l for l in out.getvalue().splitlines() if l]  # rich itself ends its live display with a blank line
    assert lines[0].startswith("eval: dense: 1/5 (") and lines[-1].startswith("eval: dense: 5/5 (")
    assert len(lines) == 5
    assert "left)" in lines[0] and "left" not in lines[-1]


def test_the_log_is_rate_limited_but_always_ends_with_the_total():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=False, width=200), every=3600.0)
    lines = [l for l in out.getvalue().splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("eval: dense: 5/5 (")


def test_a_terminal_gets_the_live_bar_only():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=True, width=200), every=0.0)
    assert "eval: dense: 1/5 (" not in out.getvalue()
