"""Progress of long jobs (``eval``, ``calibrate``, ``bench``) on a terminal and in a log file.

On a terminal: rich's live bar (description, bar, done/total, elapsed, remaining), gone when the
job ends. Anywhere else (``nohup ... > run.log``, CI) rich draws nothing, so a long run would be
silent for hours: there the same progress is printed as one plain line per task at most every
``every`` seconds and when the task completes ("eval: 120/36000 (600 s, about 2.3 h left)").
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: seconds between two plain progress lines of one task when the console is not a terminal
LOG_EVERY = 60.0


def _remaining(seconds: float) -> str:
    if seconds >= 3600:
        return f"about {seconds / 3600:.1f} h left"
    if seconds >= 60:
        return f"about {seconds / 60:.0f} min left"
    return f"about {seconds:.0f} s left"


class JobProgress(Progress):
    """A :class:`rich.progress.Progress` that also logs plain lines when the console is not a terminal."""

    def __init__(self, console: Console, *, remaining: bool = True, every: float = LOG_EVERY):
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        if remaining:
            columns.append(TimeRemainingColumn())
        super().__init__(*columns, console=console, transient=True)
        self.every = every
        self._logged: dict[TaskID, float] = {}
        self._started: dict[TaskID, tuple[float, float]] = {}  # when each task was first seen, and its count then
        self._points: dict[TaskID, tuple[float, float]] = {}  # the time and count of each task's last line
        self._rated: set[TaskID] = set()  # tasks with a line before: the next one can estimate a rate

    def _log(self, task_id: TaskID) -> None:
        if self.console.is_terminal:
            return
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.total is None:
                return
            now = time.monotonic()
            first, done_then = self._started.setdefault(task_id, (now, task.completed))
            finished = task.completed >= task.total
            if not finished and now - self._logged.get(task_id, first) < self.every:
                return
            last_time, last_done = self._points.get(task_id, (first, done_then))
            self._logged[task_id] = now
            self._points[task_id] = (now, task.completed)
            elapsed = now - first
            # the rate since the previous line: steps counted at once (a resumed run's) do not inflate it
            rate = (task.completed - last_done) / (now - last_time) if task_id in self._rated and now > last_time else 0.0
            self._rated.add(task_id)
            left = f", {_remaining((task.total - task.completed) / rate)}" if rate > 0 and not finished else ""
            line = f"{task.description}: {task.completed:g}/{task.total:g} ({elapsed:.0f} s{left})"
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._started[task_id] = (time.monotonic(), float(kwargs.get("completed", 0)))
        return task_id

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def update(self, task_id: TaskID, *args, **kwargs) -> None:
        super().update(task_id, *args, **kwargs)
        if "completed" in kwargs or "advance" in kwargs:
            self._log(task_id)
