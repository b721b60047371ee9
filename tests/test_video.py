"""--capture-video films the greedy evaluation episodes into {run_dir}/videos as readable mp4 files."""

from __future__ import annotations

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
