"""The STYLE.md contract beyond the happy path: self-containment, bad input, Ctrl-C, determinism."""

from __future__ import annotations

import ast
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ALGOS, PRESENT, SMOKE_ARGS, check_summary, param_id, read_scalars, run_algo, summary_of

ALLOWED_IMPORTS = {
    "__future__",
    "argparse",
    "collections",
    "contextlib",
    "copy",
    "dataclasses",
    "json",
    "math",
    "os",
    "random",
    "signal",
    "sys",
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


# (algo, extra args, a word the error line must contain)
BAD_INPUTS = [
    *[(a, ["--env-id", "NoSuchEnv-v0"], "NoSuchEnv-v0") for a in PRESENT],
    *[(a, ["--env-id", "Pendulum-v1"], "Discrete") for a in PRESENT if a in ("tabular_q", "dqn", "ddqn")],
    *[(a, ["--env-id", "FrozenLake-v1"], "Box") for a in PRESENT if a in ("dqn", "ddqn")],
    ("tabular_q", ["--env-id", "CartPole-v1"], "Discrete observation"),
    ("tabular_q", ["--learning-rate", "0"], "--learning-rate"),
    ("tabular_q", ["--total-episodes", "-5"], "--total-episodes"),
    *[(a, ["--batch-size", "256", "--buffer-size", "100"], "--buffer-size") for a in PRESENT if a in ("dqn", "ddqn")],
    *[(a, ["--learning-rate", "-1e-3"], "--learning-rate") for a in PRESENT if a != "tabular_q"],
    *[(a, ["--total-timesteps", "0"], "--total-timesteps") for a in PRESENT if a != "tabular_q"],
    *[(a, ["--env-id", "FrozenLake-v1"], "Box") for a in PRESENT if a in ("reinforce", "a2c", "ppo")],
    *[(a, ["--num-envs", "0"], "--num-envs") for a in PRESENT if a in ("a2c", "ppo")],
    ("ppo", ["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"], "--num-minibatches"),
    ("reinforce", ["--episodes-per-update", "0"], "--episodes-per-update"),
    ("ddpg", ["--env-id", "CartPole-v1"], "Box"),
    *[(a, ["--batch-size", "256", "--buffer-size", "100"], "--buffer-size") for a in ("ddpg", "maddpg")],
    ("maddpg", ["--env-id", "simple_world_comm_v3"], "simple_spread_v3"),
]


@pytest.mark.parametrize(
    ("algo", "args", "word"),
    [b for b in BAD_INPUTS if b[0] in PRESENT],
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
def test_ctrl_c_stops_cleanly(algo: str, log_dir: Path) -> None:
    big = ["--total-episodes", "1000000"] if algo == "tabular_q" else ["--total-timesteps", "10000000"]
    cmd = [sys.executable, str(ALGOS / f"{algo}.py"), *big, "--save-model", "--log-dir", str(log_dir)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"},
        # a terminal's Ctrl-C: when pytest itself runs as a background job, SIGINT arrives ignored and
        # Python would then never raise KeyboardInterrupt in the child
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until the training loop reports progress
            line = proc.stdout.readline()
            if "SPS" in line:
                break
        else:
            pytest.fail("no progress line within 120 s")
        proc.send_signal(signal.SIGINT)
        # well under TensorBoard's 120 s flush timer, which a Ctrl-C landing inside the writer once waited out
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = summary_of(out)
    check_summary(summary, interrupted=True)
    run_dir = Path(summary["run_dir"])
    assert "charts/episodic_return" in read_scalars(run_dir), "event file not flushed"
    ckpt = run_dir / (f"{algo}.npz" if algo == "tabular_q" else f"{algo}.pt")
    assert ckpt.exists(), "checkpoint not saved on Ctrl-C"


CTRL_C_PROBE = """
import importlib.util, os, signal, sys, threading

spec = importlib.util.spec_from_file_location("algo", sys.argv[1])
algo = sys.modules["algo"] = importlib.util.module_from_spec(spec)  # dataclasses look the module up
spec.loader.exec_module(algo)


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(10_000):  # Python runs the handler at the next bytecode boundary
        pass


signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Ctrl-C, however pytest was started
with algo.ctrl_c_stops() as stop:
    ctrl_c()
    first = list(stop)
    try:
        ctrl_c()
        second = "no exception"
    except KeyboardInterrupt:
        second = "KeyboardInterrupt"
restored = signal.getsignal(signal.SIGINT) is signal.default_int_handler

signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job: an ignored SIGINT stays ignored
with algo.ctrl_c_stops() as stop:
    ctrl_c()
    ignored = list(stop)
still_ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN

result = []


def in_a_thread():  # no handler can be set outside the main thread, and the block must still work
    with algo.ctrl_c_stops() as stop:
        result.append(stop)


thread = threading.Thread(target=in_a_thread)
thread.start()
thread.join()
print(first, second, restored, ignored, still_ignored, result)
"""


@pytest.mark.parametrize("algo", PRESENT)
def test_ctrl_c_sets_a_flag_in_the_loop_and_a_second_one_raises(algo: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CTRL_C_PROBE, str(ALGOS / f"{algo}.py")],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "[True] KeyboardInterrupt True [] True [[]]", proc.stdout


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
