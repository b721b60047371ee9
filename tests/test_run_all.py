"""run_all.sh --quick: every algorithm runs for seconds and lands in one results table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import PRESENT, ROOT


def test_run_all_quick_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = subprocess.run(
        ["bash", str(ROOT / "run_all.sh"), "--quick", "--seeds", "1", "-j", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["algo"].split("/")[0] for r in rows} == set(PRESENT)
    assert not any(r.get("failed") for r in rows)
    table = (out / "results.md").read_text()
    assert table.startswith("| algo | env |") and "algorithm x seed runs reached their threshold" in table
    assert table.splitlines()[0] in proc.stdout  # the table is printed too


def test_run_all_rejects_bad_options(tmp_path: Path) -> None:
    for args in (["-j", "0"], ["--frobnicate"]):
        proc = subprocess.run(
            ["bash", str(ROOT / "run_all.sh"), *args, "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2 and "run_all.sh" in proc.stderr
