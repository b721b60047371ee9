"""Helpers shared by the tests: run an algorithm file the way a user does, read its output back."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tomllib
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

# Each file's test facts (smoke flags, loss tags, bad inputs, learning checks) live in facts.toml,
# which run_all.sh reads too.
FACTS = tomllib.loads((Path(__file__).with_name("facts.toml")).read_text())
SMOKE_ARGS: dict[str, list[str]] = {a: FACTS["files"][a]["smoke"].split() for a in ALL_ALGOS}
LOSS_TAGS: dict[str, set[str]] = {a: set(FACTS["files"][a]["losses"]) for a in ALL_ALGOS}
# (algo, flags, a word the one-line error must name): what every file refuses, then each file's own
BAD_INPUTS = [(a, flags.split(), word) for a in ALL_ALGOS for flags, word in FACTS["every_file"]["bad"]] + [
    (a, flags.split(), word) for a in ALL_ALGOS for flags, word in FACTS["files"][a]["bad"]
]
# (algo, flags, threshold on the greedy eval mean): the table entries CI checks on seed 1
LEARNING_CASES = [(e["file"], e["flags"].split(), e["threshold"]) for e in FACTS["table"] if e.get("ci")]

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




def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the long learning runs first, longest first, so the parallel workers do not end on one."""

    def cost(item: pytest.Item) -> float:
        if item.get_closest_marker("learning") is None:
            return 0.0
        algo = getattr(item, "callspec", None) and item.callspec.params.get("algo")
        return FACTS["files"][algo]["ci_seconds"] + 1 if algo else 1.0

    items.sort(key=cost, reverse=True)
