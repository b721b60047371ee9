"""Helpers shared by the tests: run an algorithm file the way a user does, read its output back."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALGOS = ROOT / "algos"
# The fixed list: a deleted or renamed file fails its tests instead of shrinking the suite.
ALL_ALGOS = ["tabular_q", "dqn", "ddqn", "reinforce", "a2c", "ppo", "ddpg", "maddpg"]
PRESENT = ALL_ALGOS
DEEP = [a for a in ALL_ALGOS if a != "tabular_q"]
MARKER = "# ====================================================================== run block"

SUMMARY_KEYS = {
    "algo",
    "env_id",
    "seed",
    "total_timesteps",
    "eval_return_mean",
    "eval_return_std",
    "train_seconds",
    "sps",
    "run_dir",
    "interrupted",
}

# A few hundred steps per file: enough to finish episodes, take gradient steps and log every tag.
SMOKE_ARGS: dict[str, list[str]] = {
    "tabular_q": "--total-episodes 30".split(),
    "dqn": "--total-timesteps 500 --learning-starts 100 --batch-size 32 --eval-episodes 2 --eval-frequency 250".split(),
    "ddqn": "--total-timesteps 500 --learning-starts 100 --batch-size 32 "
    "--eval-episodes 2 --eval-frequency 250".split(),
    "reinforce": "--total-timesteps 600 --episodes-per-update 2 --eval-episodes 2 --eval-frequency 300".split(),
    "a2c": "--total-timesteps 1024 --num-envs 4 --num-steps 16 --eval-episodes 2 --eval-frequency 512".split(),
    "ppo": (
        "--total-timesteps 1024 --num-envs 4 --num-steps 64 --num-minibatches 2 --update-epochs 2 "
        "--eval-episodes 2 --eval-frequency 512"
    ).split(),
    "ddpg": (
        "--total-timesteps 600 --learning-starts 200 --batch-size 32 --eval-episodes 2 --eval-frequency 300"
    ).split(),
    "maddpg": (
        "--total-timesteps 300 --learning-starts 100 --batch-size 32 --train-frequency 10 "
        "--eval-episodes 2 --eval-frequency 150"
    ).split(),
}

# The losses/<name> tags each file must write.
LOSS_TAGS: dict[str, set[str]] = {
    "tabular_q": {"losses/td_error"},
    "dqn": {"losses/td_loss", "losses/q_values"},
    "ddqn": {"losses/td_loss", "losses/q_values"},
    "reinforce": {"losses/policy_loss", "losses/baseline_loss"},
    "a2c": {"losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/explained_variance"},
    "ppo": {
        "losses/policy_loss",
        "losses/value_loss",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clipfrac",
        "losses/explained_variance",
    },
    "ddpg": {"losses/critic_loss", "losses/actor_loss", "losses/q_values"},
    "maddpg": {"losses/critic_loss", "losses/actor_loss", "losses/q_values"},
}

# Files that take both Discrete and Box actions: smoke-tested on Pendulum-v1 too.
CONTINUOUS = [a for a in ("reinforce", "a2c", "ppo", "ddpg") if a in PRESENT]


def run_algo(
    algo: str, args: list[str], log_dir: Path, cwd: Path | None = None, script: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `python algos/<algo>.py args --log-dir log_dir` as a user would, with no stdin."""
    script = script or ALGOS / f"{algo}.py"
    cmd = [sys.executable, str(script), *args, "--log-dir", str(log_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        cmd, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env
    )


def param_id(value: object) -> str:
    """Readable test ids: a list of flags reads as the command line it is."""
    return " ".join(value) if isinstance(value, list) else str(value)


def summary_of(stdout: str) -> dict:
    """The contract: the last stdout line is one JSON object."""
    lines = stdout.strip().splitlines()
    assert lines, "no stdout"
    return json.loads(lines[-1])


def check_summary(summary: dict, interrupted: bool = False) -> None:
    missing = SUMMARY_KEYS - set(summary)
    assert not missing, f"summary lacks {missing}"
    assert summary["interrupted"] is interrupted
    numbers = ["seed", "total_timesteps", "train_seconds", "sps"]
    if not interrupted:
        numbers += ["eval_return_mean", "eval_return_std"]
    for key in numbers:
        assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), (key, summary[key])
    assert Path(summary["run_dir"]).is_dir()


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Read a run's TensorBoard event files back: tag -> [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_text_tags(run_dir: str | Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return list(acc.Tags()["tensors"])


def load_module(algo: str) -> ModuleType:
    """Import algos/<algo>.py as a module (for its pure functions) without running main()."""
    spec = importlib.util.spec_from_file_location(f"algo_{algo}", ALGOS / f"{algo}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


# Rough seconds of each learning check on CI's 2 cores: the longest start first.
LEARNING_COST = {"maddpg": 300, "ddqn": 110, "dqn": 100, "ddpg": 95, "ppo": 75, "reinforce": 45, "a2c": 30}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the long learning runs first, longest first, so the parallel workers do not end on one."""

    def cost(item: pytest.Item) -> float:
        if item.get_closest_marker("learning") is None:
            return 0.0
        algo = getattr(item, "callspec", None) and item.callspec.params.get("algo")
        return LEARNING_COST.get(algo, 20) + 1

    items.sort(key=cost, reverse=True)
