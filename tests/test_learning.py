"""Learning checks: each file, with its defaults, reaches the return its issue asks for (one seed here;
`./run_all.sh` covers seeds 1-3 and the README reports them). The cases are tests/facts.toml's
table entries marked ci."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LEARNING_CASES, param_id, run_algo, summary_of


@pytest.mark.learning
@pytest.mark.parametrize(
    ("algo", "args", "threshold"),
    LEARNING_CASES,
    ids=param_id,
)
def test_reaches_the_threshold_with_defaults(algo: str, args: list[str], threshold: float, log_dir: Path) -> None:
    proc = run_algo(algo, args, log_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc.stdout)
    assert summary["eval_return_mean"] >= threshold, summary
