"""The open registry: a method defined here, registered with the decorator, runs through `answer`,
`bench` and `eval` with no change to sharpv; an installed package's method arrives through the
`sharpv.methods` entry point (a real distribution on sys.path, in a fresh process); bad
registrations are refused with one line; a broken plugin is one warning line, not a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch

from sharpv.cli import main
from sharpv.core.selection import budget_total
from sharpv.errors import SharpVError
from sharpv.methods import METHODS, MethodConfig, PruningMethod, VisualSelection, create, register_method

from test_video import write_video


@dataclass(frozen=True)
class LastFramesConfig(MethodConfig):
    """``newest_first``: fill the budget from the last frame backwards (else from the first)."""

    newest_first: bool = True


class LastFrames(PruningMethod):
    """Keeps whole frames from the end of the video backwards, as many tokens as the budget allows
    (a method defined in a test, to show that the registry is open)."""

    name = "last_frames"
    config_class = LastFramesConfig

    def select_visual(self, grid, spatial):
        t, f = grid.shape[:2]
        order = torch.arange(t * f).view(t, f).flip(0).reshape(-1) if self.config.newest_first else torch.arange(t * f)
        keep = torch.zeros(t * f, dtype=torch.bool)
        keep[order[: budget_total(self.config.keep_ratio, t, f)]] = True
        return VisualSelection(keep.view(t, f))


@pytest.fixture
def registered():
    register_method(LastFrames)
    yield LastFrames
    METHODS.unregister("last_frames")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", n=16, size=64)


def test_the_decorator_registers_and_create_builds_it(registered):
    assert list(METHODS)[-1] == "last_frames" and METHODS["last_frames"] is LastFrames
    method = create("last_frames", keep_ratio=0.25, newest_first=False)
    keep = method.select_visual(torch.randn(4, 4, 3), (2, 2)).keep
    assert keep[0].all() and not keep[1:].any()
    assert register_method(LastFrames) is LastFrames  # the same class again: nothing happens
    assert register_method(replace=True)(LastFrames) is LastFrames


def test_a_registered_method_runs_through_answer(registered, capsys, tiny_dirs, clip):
    code = main(["answer", str(clip), "q", "--model", str(tiny_dirs["llava-onevision"]), "--frames", "8",
                 "--method", "last_frames", "--keep-ratio", "0.25", "--set", "newest_first=true", "--max-new-tokens", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    f = result["visual_tokens_in"] // 8
    assert result["method"] == "last_frames" and result["kept_per_frame"] == [0] * 6 + [f, f]
    assert result["config"] == {"keep_ratio": 0.25, "positions": "original", "newest_first": True}


def test_a_registered_method_runs_through_bench(registered, capsys, tmp_path, tiny_dirs):
    out = tmp_path / "bench"
    code = main(["bench", "--model", str(tiny_dirs["qwen2.5-vl"]), "--frames", "4", "--methods", "last_frames,dense",
                 "--budgets", "0.5,adaptive", "--dtype", "float32", "--repeats", "1", "--warmup", "0", "--new-tokens", "2",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "results.json").read_text())["records"]
    assert [(r["method"], r["budget"]) for r in records] == [("dense", None), ("last_frames", 0.5), ("ideal", 0.5)]  # no adaptive mode
    assert records[1]["visual_tokens_kept"] == records[1]["visual_tokens_in"] // 2


def test_a_registered_method_runs_through_eval(registered, capsys, tmp_path):
    out = tmp_path / "eval"
    code = main(["eval", "--n", "6", "--methods", "last_frames:newest_first=false", "--budgets", "0.25", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in records] == ["dense", "last_frames:newest_first=false"]
    assert records[1]["kept_share"] == pytest.approx(0.25)


def test_bad_registrations_are_refused_with_one_line():
    class NoName(PruningMethod):
        config_class = MethodConfig

    class BadName(PruningMethod):
        name = "Last-Frames"

    @dataclass(frozen=True)
    class NoBudget:
        layer: int = 2

    class NoBudgetMethod(PruningMethod):
        name = "no_budget"
        config_class = NoBudget

    class Impostor(PruningMethod):
        name = "sharpv"

    cases = [(NoName, "name must be lower-case letters"), (BadName, "got 'Last-Frames'"),
             (NoBudgetMethod, "config_class must be a dataclass with keep_ratio and positions"),
             (dict, "is not a method: subclass sharpv.methods.PruningMethod"),
             (Impostor, "method name 'sharpv' is taken by a built-in method; pick another name")]
    for cls, message in cases:
        with pytest.raises(SharpVError, match=message.replace("(", r"\(")):
            register_method(cls)
    with pytest.raises(SharpVError, match="taken by a built-in"):
        register_method(Impostor, replace=True)
    with pytest.raises(SharpVError, match="built-in method and cannot be removed"):
        METHODS.unregister("fastv")
    assert METHODS["sharpv"].__module__ == "sharpv.methods.sharpv" and "no_budget" not in METHODS


def test_a_second_class_under_a_registered_name_needs_replace(registered):
    class Other(LastFrames):
        """Another class under the same name."""

    with pytest.raises(SharpVError, match=r"'last_frames' is taken by .*LastFrames; pick another name or pass replace=True"):
        register_method(Other)
    assert register_method(Other, replace=True) is Other and METHODS["last_frames"] is Other


def _distribution(root, entry: str, module: str | None) -> dict:
    """A package installed the way pip installs one (a module and a dist-info folder with an
    entry_points.txt), on a path a child process puts first."""
    if module is not None:
        (root / "sharpv_plugin_demo.py").write_text(module)
    info = root / "sharpv_plugin_demo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sharpv-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[sharpv.methods]\n{entry}\n")
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


PLUGIN = textwrap.dedent('''
    import torch
    from sharpv.core.selection import budget_total
    from sharpv.methods import MethodConfig, PruningMethod, VisualSelection

    class FirstTokens(PruningMethod):
        """The video's first tokens, as many as the budget allows."""

        name = "first_tokens"
        config_class = MethodConfig

        def select_visual(self, grid, spatial):
            t, f = grid.shape[:2]
            keep = torch.zeros(t * f, dtype=torch.bool)
            keep[: budget_total(self.config.keep_ratio, t, f)] = True
            return VisualSelection(keep.view(t, f))
''')


def test_an_installed_package_adds_a_method_through_the_entry_point(tmp_path, tiny_dirs, clip):
    env = _distribution(tmp_path, "first_tokens = sharpv_plugin_demo:FirstTokens", PLUGIN)
    proc = subprocess.run([sys.executable, "-m", "sharpv.cli", "answer", str(clip), "q", "--model", str(tiny_dirs["qwen3-vl"]),
                           "--frames", "8", "--method", "first_tokens", "--keep-ratio", "0.3", "--max-new-tokens", "2", "--json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    kept = result["kept_per_frame"]
    assert result["method"] == "first_tokens" and sum(kept) == round(0.3 * result["visual_tokens_in"])
    assert kept == sorted(kept, reverse=True) and kept[-1] == 0  # filled from the first frame on
    listed = subprocess.run([sys.executable, "-c", "import sharpv; print(','.join(sharpv.METHODS))"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert listed.stdout.strip().endswith(",fastv,pyramiddrop,first_tokens")


def test_a_broken_plugin_is_one_warning_line_and_sharpv_goes_on(tmp_path, tiny_dirs, clip):
    env = _distribution(tmp_path, "broken = sharpv_plugin_missing:Nothing", None)
    proc = subprocess.run([sys.executable, "-m", "sharpv.cli", "answer", str(clip), "q", "--model", str(tiny_dirs["llava-onevision"]),
                           "--frames", "4", "--method", "dense", "--max-new-tokens", "1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: the sharpv.methods entry point 'broken' (sharpv_plugin_missing:Nothing) was skipped: "
                        "No module named 'sharpv_plugin_missing'"]
    assert "Traceback" not in proc.stderr
