"""The STYLE.md contract beyond the happy path. Which test enforces which clause:

| clause (../shared/STYLE.md)                         | test                                                        |
|-----------------------------------------------------|-------------------------------------------------------------|
| one file, no shared code; runs when copied alone     | test_imports_nothing_from_this_repository, test_runs_when_copied_alone_into_an_empty_folder |
| the run block is the same text in every deep file    | test_run_block_is_the_same_text_in_every_deep_file          |
| flags (--env-id ... --capture-video)                 | test_smoke.py::test_help_lists_the_contract_flags           |
| Args: algorithm knobs (AlgoArgs, above the marker), then the run knobs (Args, below); one docstring line per field | test_args_are_the_knobs_then_the_run_with_one_line_each |
| run directory, never reused                          | test_smoke.py::test_smoke_run_keeps_the_contract, test_same_seed_gives_identical_episodic_returns |
| TensorBoard tags, hyperparameters text               | test_smoke.py::test_smoke_run_keeps_the_contract            |
| progress line at most every few seconds              | test_smoke.py (a line exists), test_progress_lines_come_every_two_seconds |
| evaluation seeded apart from training                | test_evaluation_is_seeded_apart_from_training               |
| summary: last stdout line is one JSON object         | test_smoke.py, conftest.check_summary                       |
| checkpoint, --load-model, --eval-only                | test_checkpoint_round_trip_gives_the_same_eval              |
| --capture-video                                      | test_video.py                                               |
| bad input: one line, exit 2                          | test_bad_input_is_one_clear_line_and_exit_2, test_rates_and_sizes_must_be_finite, test_a_log_dir_that_cannot_hold_runs_is_one_line, test_a_buffer_too_large_to_allocate_is_one_line, test_more_envs_than_any_machine_holds_is_one_line, test_too_large_tells_a_refused_size_from_a_bug |
| Ctrl-C: summary, exit 130; a second press aborts     | test_ctrl_c_stops_cleanly, test_two_ctrl_c_abort_at_once    |
| same seed, same returns (CPU)                        | test_same_seed_gives_identical_episodic_returns             |
| truncation is not termination                        | test_math.py (td / critic targets, n-step, GAE, returns-to-go) |
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import (
    ALGOS,
    BAD_INPUTS,
    DEEP,
    MARKER,
    PRESENT,
    SMOKE_ARGS,
    check_summary,
    load_module,
    param_id,
    read_scalars,
    run_algo,
    summary_of,
)

ALLOWED_IMPORTS = {
    "__future__",
    "argparse",
    "collections",
    "copy",
    "dataclasses",
    "json",
    "math",
    "os",
    "random",
    "shutil",
    "signal",
    "sys",
    "tempfile",
    "threading",
    "time",
    "typing",
    "numpy",
    "torch",
    "gymnasium",
    "tyro",
    "mpe2",
    "pettingzoo",
}


@pytest.mark.parametrize("algo", PRESENT)
def test_imports_nothing_from_this_repository(algo: str) -> None:
    tree = ast.parse((ALGOS / f"{algo}.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            roots.add(node.module.split(".")[0])
    local = {p.stem for p in ALGOS.glob("*.py")} | {"algos", "tests", "conftest"}
    assert not roots & local, roots & local
    assert roots <= ALLOWED_IMPORTS, roots - ALLOWED_IMPORTS


@pytest.mark.parametrize("algo", PRESENT)
def test_runs_when_copied_alone_into_an_empty_folder(algo: str, tmp_path: Path) -> None:
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(ALGOS / f"{algo}.py", alone / f"{algo}.py")
    proc = run_algo(algo, SMOKE_ARGS[algo], Path("runs"), cwd=alone, script=alone / f"{algo}.py")
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc.stdout)
    check_summary_rel(summary, alone)


def check_summary_rel(summary: dict, cwd: Path) -> None:
    assert (cwd / summary["run_dir"]).is_dir()
    assert summary["run_dir"].startswith("runs")


@pytest.mark.parametrize(
    ("algo", "args", "word"),
    BAD_INPUTS,
    ids=param_id,
)
def test_bad_input_is_one_clear_line_and_exit_2(algo: str, args: list[str], word: str, log_dir: Path) -> None:
    proc = run_algo(algo, args, log_dir, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, proc.stderr
    assert "Traceback" not in proc.stderr and word in proc.stderr and f"{algo}.py" in proc.stderr
    assert not log_dir.exists() or not any(log_dir.iterdir()), "a failed start must not leave a run directory"


@pytest.mark.parametrize("algo", PRESENT)
def test_a_log_dir_that_cannot_hold_runs_is_one_line(algo: str, tmp_path: Path) -> None:
    """--log-dir naming a file: the run folder cannot be made, and the error says so in one line."""
    (not_a_dir := tmp_path / "runs").write_text("a file, not a folder")
    proc = run_algo(algo, [], not_a_dir, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (proc.returncode, proc.stderr)
    assert f"{algo}.py: error: cannot make {not_a_dir}" in proc.stderr and "--log-dir" in proc.stderr


HUGE, OVERFLOW = str(10**15), str(10**19)  # petabytes: more than any machine, whatever its overcommit policy;
# 10**19 passes 64 bits, where numpy and torch refuse the size itself (a ValueError or TypeError, not MemoryError)
# reinforce's buffer holds episodes x 500 steps: 10**12 of them is petabytes too (10**15 overflows numpy's sizes)
TOO_BIG = {"dqn": ["--buffer-size", HUGE], "ddqn": ["--buffer-size", HUGE], "ddpg": ["--buffer-size", HUGE],
           "maddpg": ["--buffer-size", HUGE], "reinforce": ["--episodes-per-update", str(10**12)],
           "a2c": ["--num-steps", HUGE], "ppo": ["--num-steps", HUGE, "--num-minibatches", "1"]}
# each way numpy or torch refuses: MemoryError, numpy's and torch's size overflow, torch's allocator for a layer
WAYS = {"memory": lambda algo: TOO_BIG[algo], "overflow": lambda algo: [OVERFLOW if a == HUGE or a == str(10**12)
        else a for a in TOO_BIG[algo]], "network": lambda algo: ["--hidden-sizes", HUGE],
        "network-overflow": lambda algo: ["--hidden-sizes", OVERFLOW]}
SAYS = {"memory": "Unable to allocate", "overflow": "Maximum allowed dimension exceeded",
        "network": "can't allocate memory", "network-overflow": "Overflow when unpacking long"}


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("algo", DEEP)
def test_a_buffer_too_large_to_allocate_is_one_line(algo: str, way: str, log_dir: Path) -> None:
    """A buffer, rollout or network no machine holds: numpy's or torch's one-line reason, exit 2, no traceback."""
    proc = run_algo(algo, WAYS[way](algo), log_dir, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    assert len(errors) == 1 and "too large to allocate" in errors[0] and SAYS[way] in errors[0], proc.stderr
    assert "smaller buffer, rollout or network" in errors[0], proc.stderr
    assert not log_dir.exists() or not any(log_dir.iterdir()), "a refused size must not leave a run directory"


@pytest.mark.parametrize("size", [HUGE, OVERFLOW])
@pytest.mark.parametrize("algo", [a for a in ("a2c", "ppo") if a in DEEP])
def test_more_envs_than_any_machine_holds_is_one_line(algo: str, size: str, log_dir: Path) -> None:
    """--num-envs past memory is refused by the rollout storage before any env is built: it used to hang
    while it built the list of that many envs, eating memory, and never reached the storage."""
    proc = run_algo(algo, ["--num-envs", size, "--total-timesteps", "1000"], log_dir, timeout=60)
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    says = SAYS["memory"] if size == HUGE else SAYS["overflow"]
    assert len(errors) == 1 and "too large to allocate" in errors[0] and says in errors[0], proc.stderr
    assert not log_dir.exists() or not any(log_dir.iterdir()), "a refused size must not leave a run directory"


@pytest.mark.parametrize("algo", PRESENT)
def test_too_large_tells_a_refused_size_from_a_bug(algo: str) -> None:
    """too_large, which __main__ asks before it turns an error into one line, on numpy's real refusals (and
    tabular_q's only way to one: its Q-table) and on errors that are bugs, which it must leave alone."""
    m = load_module(algo)
    for shape, says in (((10**15, 4), "Unable to allocate 28.4 PiB"), ((10**18, 4), "array is too big"),
                        (10**19, "Maximum allowed dimension exceeded")):
        with pytest.raises((MemoryError, ValueError)) as refused:
            np.zeros(shape)
        reason = m.too_large(refused.value)
        assert reason is not None and reason.startswith(says) and "\n" not in reason, reason
    assert m.too_large(MemoryError()) == "out of memory"
    for bug in (ValueError("operands could not be broadcast together"), RuntimeError("mat1 and mat2 shapes cannot"
                " be multiplied"), TypeError("unsupported operand type(s)")):
        assert m.too_large(bug) is None


def ctrl_c(proc: subprocess.Popen, after: float = 0.0) -> tuple[str, str]:
    """Press Ctrl-C `after` seconds from now; the run's stdout and stderr once it has exited."""
    try:
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        # well under TensorBoard's 120 s flush timer, which a Ctrl-C landing inside the writer once waited out
        return proc.communicate(timeout=30)
    finally:
        proc.kill()


@pytest.mark.parametrize("algo", PRESENT)
def test_ctrl_c_stops_cleanly(algo: str, log_dir: Path) -> None:
    proc = start_long_run(algo, log_dir)
    out, err = ctrl_c(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = summary_of(out)
    check_summary(summary, interrupted=True)
    run_dir = Path(summary["run_dir"])
    assert "charts/episodic_return" in read_scalars(run_dir), "event file not flushed"
    ckpt = run_dir / (f"{algo}.npz" if algo == "tabular_q" else f"{algo}.pt")
    assert ckpt.exists(), "checkpoint not saved on Ctrl-C"


def start_long_run(algo: str, log_dir: Path) -> subprocess.Popen:
    """A long run, started as a terminal would, returned once its loop prints progress."""
    big = ["--total-episodes", "1000000"] if algo == "tabular_q" else ["--total-timesteps", "10000000"]
    cmd = [sys.executable, str(ALGOS / f"{algo}.py"), *big, "--save-model", "--log-dir", str(log_dir)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # a terminal's Ctrl-C: when pytest itself runs as a background job, SIGINT arrives ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the training loop reports progress
        if "SPS" in proc.stdout.readline():
            return proc
    proc.kill()
    pytest.fail("no progress line within 120 s")


@pytest.mark.parametrize("algo", PRESENT)
def test_two_ctrl_c_abort_at_once(algo: str, log_dir: Path) -> None:
    proc = start_long_run(algo, log_dir)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)  # two signals sent at once reach the handler as one
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    # 130 from the handler; -SIGINT when the second press lands as Python is already exiting
    assert proc.returncode in (130, -signal.SIGINT), err
    # a press that lands while Python is already shutting down can only be reported by Python itself
    assert "Traceback" not in err or "KeyboardInterrupt" in err.splitlines()[-1], err
    # the second press aborts without a summary, unless the first had already finished the run by then
    summaries = [line for line in out.splitlines() if line.startswith("{")]
    assert not summaries or summary_of(out)["interrupted"] is True


def below_marker(algo: str) -> str:
    text = (ALGOS / f"{algo}.py").read_text()
    assert text.count(MARKER) == 1, f"{algo}.py needs exactly one run-block marker line"
    return text[text.index(MARKER) :]


# what differs per file (env, budget, evaluation): the end of AlgoArgs, above the marker
FILE_KNOBS = ["env_id", "total_timesteps", "eval_frequency", "eval_episodes"]
# the run knobs every deep file shares: Args in the run block
SHARED_KNOBS = ["seed", "max_episode_steps", "cuda", "torch_deterministic", "num_threads", "log_dir", "exp_name",
                "save_model", "load_model", "eval_only", "capture_video"]
# tabular_q.py has no torch device or threads, and counts episodes
TABULAR_FILE_KNOBS = ["env_id", "total_episodes", "eval_frequency", "eval_episodes"]
TABULAR_SHARED_KNOBS = [k for k in SHARED_KNOBS if k not in ("cuda", "num_threads")]


def dataclass_fields(algo: str, text: str, name: str) -> list[str]:
    """The fields of class `name` in `text`, checking one single-line docstring per field (tyro prints it in
    --help, where a hard line break shows as a ragged line)."""
    cls = next((n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == name), None)
    assert cls is not None, f"{algo}.py: no class {name} where it belongs"
    names = []
    for field, doc in itertools.pairwise([*cls.body, None]):
        if isinstance(field, ast.AnnAssign):
            names.append(field.target.id)
            assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant), f"{field.target.id}: no docstring"
            assert doc.lineno == doc.end_lineno, f"{algo}.py: --{field.target.id}'s docstring spans several lines"
    return names


@pytest.mark.parametrize("algo", PRESENT)
def test_args_are_the_knobs_then_the_run_with_one_line_each(algo: str) -> None:
    """STYLE.md, anatomy item 3: the algorithm's knobs first, then the run knobs; one docstring line per field.
    AlgoArgs above the marker holds the algorithm's knobs and the file's env, budget and evaluation; Args in the
    run block adds the run knobs every file shares, after them (a dataclass lists a base class's fields first)."""
    source = (ALGOS / f"{algo}.py").read_text()
    above, below = source[: source.index(MARKER)], below_marker(algo)
    own, shared = (TABULAR_FILE_KNOBS, TABULAR_SHARED_KNOBS) if algo == "tabular_q" else (FILE_KNOBS, SHARED_KNOBS)
    knobs = dataclass_fields(algo, above, "AlgoArgs")
    assert knobs[-len(own) :] == own, "the file's env, budget and evaluation end AlgoArgs"
    assert len(knobs) > len(own), "the algorithm's knobs come first"
    assert dataclass_fields(algo, below, "Args") == shared, "the shared run knobs, in the same order in every file"
    m = load_module(algo)
    assert issubclass(m.Args, m.AlgoArgs)
    assert [f.name for f in dataclasses.fields(m.Args)] == knobs + shared


def test_run_block_is_the_same_text_in_every_deep_file() -> None:
    reference = below_marker("dqn")
    for algo in DEEP:
        assert below_marker(algo) == reference, f"{algo}.py's run block differs from dqn.py's"
    # tabular_q.py has no torch: the same definitions in the same order
    names = lambda text: [n.name for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert names(below_marker("tabular_q")) == names(reference)


@pytest.mark.parametrize("algo", PRESENT)
def test_rates_and_sizes_must_be_finite(algo: str) -> None:
    """nan passes `x <= 0` (it compares False) and inf any lower bound: every float knob that must be
    positive or >= 0 refuses both, by name, before anything runs."""
    m = load_module(algo)
    hints = typing.get_type_hints(m.Args)
    floats = [name for name in (*m.POSITIVE, *m.NON_NEGATIVE) if "float" in str(hints[name])]
    assert "learning_rate" in floats
    for name, bad in itertools.product(floats, (math.nan, math.inf)):
        args = m.Args(**{name: bad})
        with pytest.raises(m.UsageError, match=f"--{name.replace('_', '-')} must "):  # be ... finite, lie in [0, 1]
            if algo == "tabular_q":
                m.check_args(args)
            else:  # the knobs left at None are filled by the action space's kind
                m.check_args(args, gym.spaces.Discrete(2) if gym.spaces.Discrete in m.ACTION_SPACES
                             else gym.spaces.Box(-1.0, 1.0, (1,)))


@pytest.mark.parametrize("algo", DEEP)
def test_evaluation_is_seeded_apart_from_training(algo: str) -> None:
    m = load_module(algo)
    args = m.Args(eval_episodes=3, seed=5)
    seeds = []

    class Recorder:  # the real env, recording the seeds it is reset with
        def __init__(self, env) -> None:  # noqa: ANN001
            self.env, self.action_space = env, env.action_space

        def reset(self, seed: int | None = None):  # noqa: ANN201
            seeds.append(seed)
            return self.env.reset(seed=seed)

        def step(self, action):  # noqa: ANN001, ANN201
            return self.env.step(action)

        def close(self) -> None:
            self.env.close()

    real = m.make_env
    m.make_env = lambda a, render_mode=None: Recorder(real(a, render_mode))
    try:
        env = real(args)
        m.check_args(args, env.action_space)  # as main does: fills the knobs chosen by action space
        agent = m.make_agent(args, env)
        returns = m.evaluate(agent, args, torch.device("cpu"))
    finally:
        m.make_env = real
    assert len(returns) == 3 and seeds == [10_005, 20_005, 30_005]  # never the training seed 5


@pytest.mark.parametrize("algo", PRESENT)
def test_checkpoint_round_trip_gives_the_same_eval(algo: str, log_dir: Path) -> None:
    trained = run_algo(algo, SMOKE_ARGS[algo] + ["--save-model", "--seed", "3"], log_dir)
    assert trained.returncode == 0, trained.stderr
    summary = summary_of(trained.stdout)
    assert summary["checkpoint"] and f"checkpoint at {summary['checkpoint']}" in trained.stdout
    smoke = SMOKE_ARGS[algo]
    eval_flags = smoke[smoke.index("--eval-episodes") :][:2] if "--eval-episodes" in smoke else []
    loaded = run_algo(algo, ["--load-model", summary["checkpoint"], "--eval-only", "--seed", "3", *eval_flags], log_dir)
    assert loaded.returncode == 0, loaded.stderr
    again = summary_of(loaded.stdout)
    assert again["total_timesteps"] == 0 and again["run_dir"] != summary["run_dir"]
    assert again["eval_return_mean"] == summary["eval_return_mean"]
    assert again["eval_return_std"] == summary["eval_return_std"]


def test_progress_lines_come_every_two_seconds(log_dir: Path) -> None:
    # stopped by the clock, not by a budget: a fixed episode count ran under 4 s on a faster CI machine
    proc = start_long_run("tabular_q", log_dir)
    out, err = ctrl_c(proc, after=9)
    assert proc.returncode == 130, err
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(summary_of(out)["run_dir"], size_guidance={"scalars": 0})
    acc.Reload()
    times = [e.wall_time for e in acc.Scalars("charts/SPS")][:-2]  # the last two: end of loop, end of run
    assert len(times) >= 3, "the run was too short to show the interval"
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # the loop times its 2 s by perf_counter, TensorBoard stamps wall time: allow the two clocks' jitter
    assert all(1.95 <= g <= 6.0 for g in gaps), gaps


@pytest.mark.parametrize("algo", PRESENT)
def test_same_seed_gives_identical_episodic_returns(algo: str, log_dir: Path) -> None:
    args = SMOKE_ARGS[algo] + ["--seed", "7"]
    run_a = summary_of(run_algo(algo, args, log_dir).stdout)["run_dir"]
    run_b = summary_of(run_algo(algo, args, log_dir).stdout)["run_dir"]
    assert run_a != run_b, "a run directory was reused"
    first, second = read_scalars(run_a), read_scalars(run_b)
    assert first["charts/episodic_return"] == second["charts/episodic_return"]
    assert first["eval/episodic_return"] == second["eval/episodic_return"]
    assert len(first["charts/episodic_return"]) >= 3


@pytest.mark.parametrize("algo", ["dqn", "ddqn", "reinforce", "ddpg"])
def test_only_finished_episodes_are_logged(algo: str, log_dir: Path) -> None:
    """One env: each charts/episodic_return is logged at the step its episode ended, so the steps are the
    running sum of the lengths; an episode the budget cuts short is no episode and is not logged (5 steps
    end no CartPole-v1 or Pendulum-v1 episode)."""
    i = SMOKE_ARGS[algo].index("--total-timesteps")
    for budget in (613, 5):
        args = SMOKE_ARGS[algo][:i] + ["--total-timesteps", str(budget)] + SMOKE_ARGS[algo][i + 2 :]
        proc = run_algo(algo, args, log_dir)
        assert proc.returncode == 0, proc.stderr
        scalars = read_scalars(summary_of(proc.stdout)["run_dir"])
        steps = [s for s, _ in scalars.get("charts/episodic_return", [])]
        lengths = [int(v) for _, v in scalars.get("charts/episodic_length", [])]
        assert steps == list(itertools.accumulate(lengths)) and all(s <= budget for s in steps)
        assert budget != 5 or not steps, steps


@pytest.mark.parametrize("algo", ["ppo", "a2c", "reinforce"])
def test_box_checkpoint_carries_the_observation_statistics(algo: str, log_dir: Path) -> None:
    """Box actions turn --norm-obs and --norm-reward on: the running statistics travel in the checkpoint,
    and the reloaded agent evaluates exactly as the trained one did."""
    rollout = [] if algo == "reinforce" else ["--num-steps", "128"]  # a flag given still wins over the Box value
    flags = SMOKE_ARGS[algo] + ["--env-id", "Pendulum-v1", "--total-timesteps", "1200", "--seed", "3", *rollout]
    trained = run_algo(algo, flags + ["--save-model"], log_dir)
    assert trained.returncode == 0, trained.stderr
    summary = summary_of(trained.stdout)
    ckpt = torch.load(summary["checkpoint"], weights_only=True)
    assert ckpt["args"]["norm_obs"] is True and ckpt["args"]["norm_reward"] is True
    assert algo == "reinforce" or ckpt["args"]["num_steps"] == 128
    assert bool(ckpt["agent"]["norm_obs"]) and ckpt["agent"]["obs_count"] > 1000
    assert ckpt["agent"]["obs_var"].min() > 0 and ckpt["agent"]["obs_mean"].abs().max() > 0
    loaded = run_algo(algo, ["--env-id", "Pendulum-v1", "--load-model", summary["checkpoint"], "--eval-only",
                              "--seed", "3", "--eval-episodes", "2"], log_dir)
    assert loaded.returncode == 0, loaded.stderr
    assert summary_of(loaded.stdout)["eval_return_mean"] == summary["eval_return_mean"]
