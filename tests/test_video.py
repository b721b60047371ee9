"""--capture-video films the greedy evaluation episodes into {run_dir}/videos as readable mp4 files."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import pytest
from conftest import param_id, run_algo, summary_of

# (algo, flags, frames per episode or None where the episode's length varies)
CASES = [
    ("dqn", ["--total-timesteps", "300", "--learning-starts", "100", "--batch-size", "32"], None),
    ("ppo", ["--env-id", "Pendulum-v1", "--total-timesteps", "256", "--num-envs", "2", "--num-steps", "64"], 200),
    ("tabular_q", ["--total-episodes", "20"], None),
    ("maddpg", ["--total-timesteps", "100", "--learning-starts", "50", "--batch-size", "16"], 25),
]


@pytest.mark.parametrize(("algo", "flags", "steps"), CASES, ids=param_id)
def test_capture_video_writes_one_readable_mp4_per_eval_episode(
    algo: str, flags: list[str], steps: int | None, log_dir: Path
) -> None:
    proc = run_algo(algo, [*flags, "--eval-episodes", "2", "--capture-video", "--eval-frequency", "0"], log_dir)
    assert proc.returncode == 0, proc.stderr
    videos = sorted((Path(summary_of(proc.stdout)["run_dir"]) / "videos").glob("*.mp4"))
    assert len(videos) == 2, videos
    for video in videos:
        frames = list(iio.imiter(video))
        assert frames[0].ndim == 3 and frames[0].shape[2] == 3  # RGB images
        if steps is not None:
            assert len(frames) in (steps, steps + 1)  # one per step (and the first observation)
        else:
            assert len(frames) >= 2


MUJOCO = ["--env-id", "InvertedPendulum-v5", "--total-timesteps", "64", "--num-steps", "64", "--num-minibatches", "1",
          "--eval-episodes", "1", "--capture-video", "--save-model"]


def test_mujoco_films_on_a_machine_without_a_display(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MuJoCo's default renderer needs a display; without one the files render through EGL."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    proc = run_algo("ppo", MUJOCO, log_dir)
    assert proc.returncode == 0, proc.stderr
    videos = list((Path(summary_of(proc.stdout)["run_dir"]) / "videos").glob("*.mp4"))
    assert len(videos) == 1 and next(iio.imiter(videos[0])).ndim == 3, videos


def test_a_renderer_that_cannot_film_fails_before_training(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--capture-video renders one frame first: a machine that cannot film says so in one line, at once."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("MUJOCO_GL", "glfw")  # glfw needs a display: the renderer fails as on a headless server
    proc = run_algo("ppo", MUJOCO, log_dir)
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "--capture-video cannot render InvertedPendulum-v5" in errors[0], proc.stderr
    assert not log_dir.exists(), "nothing is written before the check"


@pytest.mark.parametrize("algo", ["tabular_q", "dqn"])
def test_without_moviepy_capture_video_fails_before_training(
    algo: str, log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project the file was copied to may lack moviepy, which gymnasium films with: gymnasium's own
    one-line reason at once, not its traceback after the training."""
    hidden = tmp_path / "moviepy"  # a package that shadows the installed one and fails to import, as a missing one
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError(\"No module named 'moviepy'\")\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    proc = run_algo(algo, ["--capture-video"], log_dir)
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "--capture-video cannot film: moviepy is not installed" in errors[0].lower(), errors
    assert "pip install" in errors[0], errors
    assert not log_dir.exists(), "nothing is written before the check"
