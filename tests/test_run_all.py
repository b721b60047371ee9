"""run_all.sh --quick: every entry runs for seconds and lands in one results table and one picture."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FACTS, PRESENT, ROOT


def run_all(*args: str, timeout: float = 900, root: Path = ROOT) -> subprocess.CompletedProcess:
    """`bash run_all.sh args` as a user runs it, with no stdin (root: a copy of the repository)."""
    cmd = ["bash", str(root / "run_all.sh"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_run_all_quick_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = run_all("--quick", "--seeds", "1", "-j", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["algo"].split("/")[0] for r in rows} == set(PRESENT)
    assert not any(r.get("failed") for r in rows)
    assert {r["entry"] for r in rows} == {e["name"] for e in FACTS["table"] if e.get("table", True)}
    table = (out / "results.md").read_text()
    assert table.startswith("| entry | env |") and "entry x seed runs reached their threshold" in table
    assert table.splitlines()[0] in proc.stdout  # the table is printed too
    check_png(out / "curves.png", rows=len(rows))


def check_png(path: Path, rows: int) -> None:
    """A PNG that reads back as an image with a panel row per entry (about 2.6 inches at 80 dpi each)."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[1] == 800 and image.shape[0] >= 200 * rows, image.shape
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_run_all_suite_quick_runs_box2d_and_mujoco_entries(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    only = "dqn@LunarLander-v3 ddpg@Hopper-v5"
    proc = run_all("--suite", "--quick", "--seeds", "1", "--only", only, "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    got = [(r["entry"], r["env_id"]) for r in rows]
    assert got == [("dqn@LunarLander-v3", "LunarLander-v3"), ("ddpg@Hopper-v5", "Hopper-v5")]
    check_png(out / "curves.png", rows=2)


@pytest.mark.parametrize("group", ["table", "suite"])
def test_run_all_list_gives_the_commands_of_facts_toml(group: str) -> None:
    flag = ["--suite"] if group == "suite" else []
    proc = run_all(*flag, "--list", "--seeds", "1 2", timeout=60)
    assert proc.returncode == 0, proc.stderr
    entries = [e for e in FACTS[group] if e.get(group, True)]
    expected = []
    for e in entries:
        flags = e.get("flags", "")
        if group == "suite":
            flags = f"--env-id {e['env']} --total-timesteps {e['budget']} --eval-frequency {e['budget'] // 10} {flags}"
        expected += [f"python algos/{e['file']}.py --seed {seed} {flags}".strip() for seed in (1, 2)]
    assert [line.strip() for line in proc.stdout.splitlines()] == expected


def test_run_all_rejects_bad_options(tmp_path: Path) -> None:
    for args in (["-j", "0"], ["--frobnicate"], ["--only", "no_such_entry"]):
        proc = run_all(*args, "--out", str(tmp_path), timeout=60)
        assert proc.returncode == 2 and "run_all.sh" in proc.stderr


@pytest.mark.parametrize("how", ["miss", "crash"])
def test_run_all_says_whether_a_run_missed_or_crashed(how: str, tmp_path: Path) -> None:
    """A miss (the run ends below its threshold) and a crash (no summary) exit 1 with different last lines:
    run in a copy of the repository whose facts hold one tabular_q entry of each kind."""
    shutil.copy(ROOT / "run_all.sh", tmp_path / "run_all.sh")
    (tmp_path / "algos").mkdir()
    shutil.copy(ROOT / "algos" / "tabular_q.py", tmp_path / "algos" / "tabular_q.py")
    (tmp_path / "tests").mkdir()
    # a greedy FrozenLake return is at most 1: a threshold of 2 is a sure miss; a step size of 0 is refused (exit 2)
    flags = "--total-episodes 30" if how == "miss" else "--total-episodes 30 --learning-rate 0"
    (tmp_path / "tests" / "facts.toml").write_text(
        f'[[table]]\nname = "tabular_q"\nfile = "tabular_q"\nflags = "{flags}"\nthreshold = 2.0\n')
    proc = run_all("--seeds", "1", "--out", str(tmp_path / "runs"), timeout=300, root=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    says = "ended below their threshold" if how == "miss" else "crashed or wrote no summary"
    assert last.startswith("run_all.sh: ") and says in last, proc.stderr
    assert "0/1 entry x seed runs reached their threshold" in proc.stdout, proc.stdout
