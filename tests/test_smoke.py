"""Every file runs end to end for a few hundred steps, as a subprocess, and keeps the output contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    ALGOS,
    CONTINUOUS,
    LOSS_TAGS,
    PRESENT,
    SMOKE_ARGS,
    check_summary,
    read_scalars,
    read_text_tags,
    run_algo,
    summary_of,
)

CONTRACT_TAGS = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return"}


@pytest.mark.parametrize("algo", PRESENT)
def test_smoke_run_keeps_the_contract(algo: str, log_dir: Path) -> None:
    # deep files also get --cuda: on a machine without a GPU that is one warning line, then CPU
    cuda = [] if algo == "tabular_q" else ["--cuda"]
    proc = run_algo(algo, SMOKE_ARGS[algo] + ["--save-model", *cuda], log_dir)
    assert proc.returncode == 0, proc.stderr
    if cuda and not torch.cuda.is_available():
        warnings = [line for line in proc.stderr.splitlines() if "cuda" in line.lower()]
        assert len(warnings) == 1 and "CPU" in warnings[0], proc.stderr
    summary = summary_of(proc.stdout)
    check_summary(summary)
    progress = [line for line in proc.stdout.splitlines() if "SPS" in line and "ETA" in line and "%" in line]
    assert progress, "no progress line on stdout"
    assert summary["seed"] == 1 and summary["algo"].startswith(algo)

    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == log_dir
    env_id, exp_name, seed, stamp = run_dir.name.split("__")
    assert (env_id, exp_name, seed) == (summary["env_id"], algo, "1") and stamp.isdigit()

    scalars = read_scalars(run_dir)
    missing = (CONTRACT_TAGS | LOSS_TAGS[algo]) - set(scalars)
    assert not missing, f"event file lacks {missing}"
    assert "hyperparameters/text_summary" in read_text_tags(run_dir)

    # checkpoint: state dicts and args, loadable without unpickling arbitrary objects
    if algo == "tabular_q":
        import numpy as np

        ckpt = np.load(run_dir / f"{algo}.npz")
        assert f"checkpoint at {run_dir / f'{algo}.npz'}" in proc.stdout
        assert ckpt["q"].ndim == 2 and json.loads(str(ckpt["args"]))["seed"] == 1
    else:
        ckpt = torch.load(run_dir / f"{algo}.pt", weights_only=True)
        assert f"checkpoint at {run_dir / f'{algo}.pt'}" in proc.stdout
        assert ckpt["args"]["seed"] == 1
        assert any(isinstance(v, dict) and v for k, v in ckpt.items() if k != "args")


@pytest.mark.parametrize("algo", PRESENT)
def test_help_lists_the_contract_flags(algo: str) -> None:
    help_proc = subprocess.run(
        [sys.executable, str(ALGOS / f"{algo}.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_proc.returncode == 0
    for flag in ["--env-id", "--seed", "--log-dir", "--exp-name", "--eval-episodes", "--save-model", "--load-model",
                 "--eval-only", "--capture-video", "--torch-deterministic"]:
        assert flag in help_proc.stdout, flag
    if algo != "tabular_q":
        for flag in ["--total-timesteps", "--cuda", "--learning-rate"]:
            assert flag in help_proc.stdout, flag


@pytest.mark.parametrize("algo", CONTINUOUS)
def test_box_actions_run_and_stay_in_bounds(algo: str, log_dir: Path) -> None:
    """Pendulum-v1 has Box(-2, 2, (1,)) actions: the Gaussian / deterministic policy path."""
    proc = run_algo(algo, SMOKE_ARGS[algo] + ["--env-id", "Pendulum-v1"], log_dir)
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc.stdout)
    check_summary(summary)
    assert summary["env_id"] == "Pendulum-v1"
    # Pendulum's reward is at most 0 and at least about -16.3 per step
    assert -16.3 * 200 <= summary["eval_return_mean"] <= 0.0
    assert "charts/episodic_return" in read_scalars(summary["run_dir"])


@pytest.mark.parametrize("env_id", ["simple_adversary_v3", "simple_speaker_listener_v4", "simple_tag_v3"])
def test_maddpg_runs_agents_of_different_sizes(env_id: str, log_dir: Path) -> None:
    """These MPE envs mix agents with different observation and action sizes."""
    proc = run_algo("maddpg", SMOKE_ARGS["maddpg"] + ["--env-id", env_id], log_dir)
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc.stdout)
    check_summary(summary)
    scalars = read_scalars(summary["run_dir"])
    agent_tags = [t for t in scalars if t.startswith("charts/agent_return/")]
    assert len(agent_tags) >= 2 and "charts/team_return" in scalars and "losses/critic_loss" in scalars
    assert "clipping" not in (proc.stdout + proc.stderr).lower()  # actions mapped into [0, 1]


def test_a2c_runs_with_rmsprop(log_dir: Path) -> None:
    """--optimizer rmsprop end to end (its first step is checked by hand in test_math); the checkpoint records it."""
    proc = run_algo("a2c", SMOKE_ARGS["a2c"] + ["--env-id", "Pendulum-v1", "--optimizer", "rmsprop", "--save-model"],
                    log_dir)
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc.stdout)
    check_summary(summary)
    ckpt = torch.load(Path(summary["run_dir"]) / "a2c.pt", weights_only=True)
    assert ckpt["args"]["optimizer"] == "rmsprop"


def test_ddpg_runs_with_td3s_twin_critics_and_target_smoothing(log_dir: Path) -> None:
    """--twin-critics --target-noise end to end: the second critic is in the checkpoint, and --load-model
    rebuilds it from the checkpoint's args (a command line without the flag) and evaluates the same."""
    flags = SMOKE_ARGS["ddpg"] + ["--twin-critics", "--target-noise", "0.2", "--save-model", "--seed", "3"]
    proc = run_algo("ddpg", flags, log_dir)
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc.stdout)
    check_summary(summary)
    ckpt = torch.load(summary["checkpoint"], weights_only=True)
    assert ckpt["args"]["twin_critics"] is True
    assert any(k.startswith("critic2.") for k in ckpt["agent"]), sorted(ckpt["agent"])
    smoke = SMOKE_ARGS["ddpg"]
    eval_flags = smoke[smoke.index("--eval-episodes") :][:2] if "--eval-episodes" in smoke else []
    loaded = run_algo("ddpg", ["--load-model", summary["checkpoint"], "--eval-only", "--seed", "3", *eval_flags],
                      log_dir)
    assert loaded.returncode == 0, loaded.stderr
    assert summary_of(loaded.stdout)["eval_return_mean"] == summary["eval_return_mean"]


def test_ddpg_loads_a_checkpoint_written_before_twin_critics(log_dir: Path) -> None:
    """A checkpoint whose args predate --twin-critics (2026-12-03) loads as a one-critic agent."""
    proc = run_algo("ddpg", SMOKE_ARGS["ddpg"] + ["--save-model"], log_dir)
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc.stdout)
    ckpt = torch.load(summary["checkpoint"], weights_only=True)
    del ckpt["args"]["twin_critics"], ckpt["args"]["target_noise"]
    old = log_dir / "old.pt"
    torch.save(ckpt, old)
    smoke = SMOKE_ARGS["ddpg"]
    eval_flags = smoke[smoke.index("--eval-episodes") :][:2] if "--eval-episodes" in smoke else []
    loaded = run_algo("ddpg", ["--load-model", str(old), "--eval-only", *eval_flags], log_dir)
    assert loaded.returncode == 0, loaded.stderr
    assert summary_of(loaded.stdout)["eval_return_mean"] == summary["eval_return_mean"]
