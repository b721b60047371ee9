"""Each file's pure math functions against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PRESENT, load_module

needs = lambda algo: pytest.mark.skipif(algo not in PRESENT, reason=f"{algo}.py not written yet")  # noqa: E731


# ----------------------------------------------------------------------------- tabular_q
@needs("tabular_q")
def test_tabular_schedule_end_points() -> None:
    m = load_module("tabular_q")
    assert m.linear_schedule(1.0, 0.05, 100, 0) == 1.0
    assert m.linear_schedule(1.0, 0.05, 100, 50) == pytest.approx(0.525)
    assert m.linear_schedule(1.0, 0.05, 100, 100) == pytest.approx(0.05)
    assert m.linear_schedule(1.0, 0.05, 100, 10_000) == pytest.approx(0.05)
    assert m.linear_schedule(1.0, 0.05, 0, 0) == 0.05


@needs("tabular_q")
def test_one_q_learning_update_by_hand() -> None:
    m = load_module("tabular_q")
    q = np.array([[0.0, 1.0], [2.0, 4.0]])
    # Q-learning bootstraps on max_a Q(1, a) = 4: target = 1 + 0.9 * 4 = 4.6
    target = m.td_target(q, r=1.0, s_next=1, a_next=0, terminated=False, gamma=0.9, algo="q-learning")
    assert target == pytest.approx(4.6)
    # Q(0, 1) = 1 + 0.5 * (4.6 - 1) = 2.8; the TD error is 3.6
    assert m.td_update(q, 0, 1, target, alpha=0.5) == pytest.approx(3.6)
    assert q[0, 1] == pytest.approx(2.8)
    assert q[1].tolist() == [2.0, 4.0]  # nothing else moves


@needs("tabular_q")
def test_one_sarsa_update_by_hand() -> None:
    m = load_module("tabular_q")
    q = np.array([[0.0, 1.0], [2.0, 4.0]])
    # SARSA bootstraps on the action it will take, A' = 0: target = 1 + 0.9 * 2 = 2.8
    target = m.td_target(q, r=1.0, s_next=1, a_next=0, terminated=False, gamma=0.9, algo="sarsa")
    assert target == pytest.approx(2.8)
    m.td_update(q, 0, 1, target, alpha=0.5)
    assert q[0, 1] == pytest.approx(1.9)  # 1 + 0.5 * (2.8 - 1)


@needs("tabular_q")
def test_tabular_terminal_target_is_the_reward() -> None:
    m = load_module("tabular_q")
    q = np.array([[0.0, 1.0], [2.0, 4.0]])
    for algo in ("q-learning", "sarsa"):
        assert m.td_target(q, r=1.0, s_next=1, a_next=1, terminated=True, gamma=0.9, algo=algo) == 1.0


@needs("tabular_q")
def test_epsilon_greedy_extremes() -> None:
    m = load_module("tabular_q")
    rng = np.random.default_rng(0)
    row = np.array([0.0, 3.0, 1.0])
    assert {m.epsilon_greedy(row, 0.0, rng) for _ in range(50)} == {1}
    assert {m.epsilon_greedy(row, 1.0, rng) for _ in range(300)} == {0, 1, 2}
    assert {m.epsilon_greedy(np.zeros(3), 0.0, rng) for _ in range(300)} == {0, 1, 2}  # ties at random


# ----------------------------------------------------------------------------- dqn / ddqn
@pytest.mark.parametrize("algo", ["dqn", "ddqn"])
def test_deep_epsilon_schedule_end_points(algo: str) -> None:
    if algo not in PRESENT:
        pytest.skip(f"{algo}.py not written yet")
    m = load_module(algo)
    assert m.linear_schedule(1.0, 0.02, 20_000, 0) == 1.0
    assert m.linear_schedule(1.0, 0.02, 20_000, 10_000) == pytest.approx(0.51)
    assert m.linear_schedule(1.0, 0.02, 20_000, 20_000) == pytest.approx(0.02)
    assert m.linear_schedule(1.0, 0.02, 20_000, 99_999) == pytest.approx(0.02)


@needs("dqn")
def test_dqn_td_target_with_and_without_terminal() -> None:
    m = load_module("dqn")
    rewards = torch.tensor([1.0, 1.0, 0.5])
    next_q = torch.tensor([[2.0, 3.0], [2.0, 3.0], [-1.0, -4.0]])  # Q(s', . ; theta-bar)
    terminated = torch.tensor([0.0, 1.0, 0.0])
    y = m.td_target(rewards, next_q, terminated, gamma=0.9)
    # 1 + 0.9 * 3 = 3.7; terminal: 1; 0.5 + 0.9 * (-1) = -0.4
    assert y.tolist() == pytest.approx([3.7, 1.0, -0.4])


@pytest.mark.parametrize("algo", ["dqn", "ddqn"])
def test_soft_update_tau_0_half_1(algo: str) -> None:
    if algo not in PRESENT:
        pytest.skip(f"{algo}.py not written yet")
    m = load_module(algo)
    src, tgt = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        src.weight.fill_(2.0), src.bias.fill_(4.0), tgt.weight.fill_(0.0), tgt.bias.fill_(0.0)
    m.soft_update(tgt, src, 0.0)
    assert (tgt.weight.item(), tgt.bias.item()) == (0.0, 0.0)
    m.soft_update(tgt, src, 0.5)
    assert (tgt.weight.item(), tgt.bias.item()) == (1.0, 2.0)
    m.soft_update(tgt, src, 1.0)
    assert (tgt.weight.item(), tgt.bias.item()) == (2.0, 4.0)


@needs("ddqn")
def test_double_q_target_uses_the_online_argmax() -> None:
    m = load_module("ddqn")
    rewards = torch.tensor([1.0, 1.0, 0.0])
    online_next = torch.tensor([[5.0, 1.0], [0.0, 9.0], [5.0, 1.0]])  # online argmax: a'=0, 1, 0
    target_next = torch.tensor([[2.0, 7.0], [3.0, 4.0], [2.0, 7.0]])  # theta-bar evaluates it
    terminated = torch.tensor([0.0, 0.0, 1.0])
    y = m.double_q_target(rewards, online_next, target_next, terminated, gamma=0.5)
    # 1 + 0.5 * 2 = 2 (not 1 + 0.5 * 7 as DQN would); 1 + 0.5 * 4 = 3; terminal: 0
    assert y.tolist() == pytest.approx([2.0, 3.0, 0.0])
