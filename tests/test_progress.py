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
    assert "left" not in lines[0]  # no rate yet
    assert "left)" in lines[1] and "left" not in lines[-1]


def test_a_resumed_run_does_not_inflate_the_estimate(monkeypatch):
    """Steps counted at once (a resumed eval) then one step per minute: the estimate follows the
    real pace (about 2 h for 120 steps left), not the jump."""
    import sharpv.harness.progress as mod

    clock = [1000.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    with JobProgress(Console(file=out, force_terminal=False, width=200), every=0.0) as progress:
        task = progress.add_task("eval", total=1000)
        progress.advance(task, 878)  # resumed
        for _ in range(2):
            clock[0] += 60.0
            progress.advance(task)
    lines = [l for l in out.getvalue().splitlines() if l]
    assert lines[-1].startswith("eval: 880/1000 (120 s, about 2.0 h left)"), lines


def test_the_log_is_rate_limited_but_always_ends_with_the_total():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=False, width=200), every=3600.0)
    lines = [l for l in out.getvalue().splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("eval: dense: 5/5 (")


def test_a_terminal_gets_the_live_bar_only():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=True, width=200), every=0.0)
    assert "eval: dense: 1/5 (" not in out.getvalue()
