"""Each file's pure math functions against values worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from conftest import load_module


# ----------------------------------------------------------------------------- tabular_q
def test_tabular_schedule_end_points() -> None:
    m = load_module("tabular_q")
    assert m.linear_schedule(1.0, 0.05, 100, 0) == 1.0
    assert m.linear_schedule(1.0, 0.05, 100, 50) == pytest.approx(0.525)
    assert m.linear_schedule(1.0, 0.05, 100, 100) == pytest.approx(0.05)
    assert m.linear_schedule(1.0, 0.05, 100, 10_000) == pytest.approx(0.05)
    assert m.linear_schedule(1.0, 0.05, 0, 0) == 0.05


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


def test_one_sarsa_update_by_hand() -> None:
    m = load_module("tabular_q")
    q = np.array([[0.0, 1.0], [2.0, 4.0]])
    # SARSA bootstraps on the action it will take, A' = 0: target = 1 + 0.9 * 2 = 2.8
    target = m.td_target(q, r=1.0, s_next=1, a_next=0, terminated=False, gamma=0.9, algo="sarsa")
    assert target == pytest.approx(2.8)
    m.td_update(q, 0, 1, target, alpha=0.5)
    assert q[0, 1] == pytest.approx(1.9)  # 1 + 0.5 * (2.8 - 1)


def test_tabular_terminal_target_is_the_reward() -> None:
    m = load_module("tabular_q")
    q = np.array([[0.0, 1.0], [2.0, 4.0]])
    for algo in ("q-learning", "sarsa"):
        assert m.td_target(q, r=1.0, s_next=1, a_next=1, terminated=True, gamma=0.9, algo=algo) == 1.0


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
    m = load_module(algo)
    assert m.linear_schedule(1.0, 0.02, 20_000, 0) == 1.0
    assert m.linear_schedule(1.0, 0.02, 20_000, 10_000) == pytest.approx(0.51)
    assert m.linear_schedule(1.0, 0.02, 20_000, 20_000) == pytest.approx(0.02)
    assert m.linear_schedule(1.0, 0.02, 20_000, 99_999) == pytest.approx(0.02)


def test_dqn_td_target_with_and_without_terminal() -> None:
    m = load_module("dqn")
    rewards = torch.tensor([1.0, 1.0, 0.5])
    next_q = torch.tensor([[2.0, 3.0], [2.0, 3.0], [-1.0, -4.0]])  # Q(s', . ; theta-bar)
    terminated = torch.tensor([0.0, 1.0, 0.0])
    y = m.td_target(rewards, next_q, terminated, gamma=0.9)
    # 1 + 0.9 * 3 = 3.7; terminal: 1; 0.5 + 0.9 * (-1) = -0.4
    assert y.tolist() == pytest.approx([3.7, 1.0, -0.4])


@pytest.mark.parametrize("algo", ["dqn", "ddqn"])
def test_q_overestimation_adds_the_bootstrap_only_at_a_time_limit(algo: str) -> None:
    m = load_module(algo)
    # Q(s^0) = 10; rewards 1, 1 with gamma 0.5: sum gamma^t r^t = 1.5 and gamma^T = 0.25; max_a Q(s^T, a) = 4
    assert m.q_overestimation(10.0, 1.5, 0.25, 4.0, terminated=False) == pytest.approx(10 - 1.5 - 0.25 * 4)  # 7.5
    assert m.q_overestimation(10.0, 1.5, 0.25, 4.0, terminated=True) == pytest.approx(8.5)  # terminal: V(s^T) = 0
    # a perfect Q on a cut CartPole episode (r = 1, gamma 0.995, 500 steps) shows no bias: Q(s^0) = 1 / (1 - gamma)
    g, T = 0.995, 500
    disc = (1 - g**T) / (1 - g)
    assert m.q_overestimation(1 / (1 - g), disc, g**T, 1 / (1 - g), terminated=False) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("algo", ["dqn", "ddqn", "ddpg", "maddpg"])
def test_soft_update_tau_0_half_1(algo: str) -> None:
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


def test_double_q_target_uses_the_online_argmax() -> None:
    m = load_module("ddqn")
    rewards = torch.tensor([1.0, 1.0, 0.0])
    online_next = torch.tensor([[5.0, 1.0], [0.0, 9.0], [5.0, 1.0]])  # online argmax: a'=0, 1, 0
    target_next = torch.tensor([[2.0, 7.0], [3.0, 4.0], [2.0, 7.0]])  # theta-bar evaluates it
    terminated = torch.tensor([0.0, 0.0, 1.0])
    y = m.double_q_target(rewards, online_next, target_next, terminated, gamma=0.5)
    # 1 + 0.5 * 2 = 2 (not 1 + 0.5 * 7 as DQN would); 1 + 0.5 * 4 = 3; terminal: 0
    assert y.tolist() == pytest.approx([2.0, 3.0, 0.0])


@pytest.mark.parametrize("algo", ["dqn", "ddqn"])
def test_numpy_greedy_action_matches_the_q_network_and_follows_updates(algo: str) -> None:
    m = load_module(algo)
    torch.manual_seed(0)
    net = m.QNetwork(4, 3, (16, 8))
    weights = m.host_weights(net)
    states = (10 * np.random.default_rng(0).standard_normal((50, 4))).astype(np.float32)
    expected = net(torch.from_numpy(states)).argmax(1).tolist()
    assert [m.greedy_action(weights, s) for s in states] == expected
    assert len(set(expected)) > 1  # the check covers more than one action
    # on the CPU the numpy arrays are views: an in-place update (as Adam makes) shows through
    with torch.no_grad():
        net.net[-1].bias.copy_(torch.tensor([0.0, 0.0, 1e6]))
    assert {m.greedy_action(weights, s) for s in states} == {2}


# ----------------------------------------------------------------------------- policy gradient family
def test_returns_to_go_with_gamma_and_bootstrap() -> None:
    m = load_module("reinforce")
    rewards = np.array([1.0, 1.0, 1.0])
    # G_2 = 1, G_1 = 1 + 0.5 * 1 = 1.5, G_0 = 1 + 0.5 * 1.5 = 1.75
    assert m.returns_to_go(rewards, 0.5).tolist() == pytest.approx([1.75, 1.5, 1.0])
    # truncated with V(s^3) = 4: G_2 = 1 + 0.5 * 4 = 3, G_1 = 2.5, G_0 = 2.25
    assert m.returns_to_go(rewards, 0.5, bootstrap=4.0).tolist() == pytest.approx([2.25, 2.5, 3.0])
    assert m.returns_to_go(rewards, 1.0).tolist() == pytest.approx([3.0, 2.0, 1.0])


def test_reinforce_loss_by_hand() -> None:
    m = load_module("reinforce")
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = m.reinforce_loss(logp, torch.tensor([1.0, 3.0]))
    assert loss.item() == pytest.approx(3.5)  # -((1 * -1) + (3 * -2)) / 2
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-0.5, -1.5])  # -w_t / T: raise log pi where w > 0


SLIDE_FLAGS = ("--no-baseline --no-norm-adv --episodes-per-update 1 --max-grad-norm 0 --no-anneal-lr "
               "--ent-coef 0").split()


def test_reinforce_slide_flags_give_the_slides_gradient() -> None:
    """The docstring's flags for the slides' update: one episode, w_t = G_t with no baseline and no
    normalisation, no clipping, a fixed step size; the gradient is then -1/T sum_t G_t grad log pi."""
    import tyro

    m = load_module("reinforce")
    args = tyro.cli(m.Args, args=SLIDE_FLAGS)
    m.check_args(args, gym.spaces.Discrete(2))  # fills the knobs left at None: the flags above still win
    assert (args.baseline, args.norm_adv, args.episodes_per_update, args.max_grad_norm, args.anneal_lr) == (
        False, False, 1, 0.0, False
    )
    assert args.ent_coef == 0.0
    # a linear softmax policy, logits = W s + b with W = b = 0, so pi = (0.5, 0.5) in every state
    agent = m.Agent(obs_dim=1, act_dim=2, discrete=True, hidden=())
    with torch.no_grad():
        agent.net[0].weight.zero_()
        agent.net[0].bias.zero_()
    # one episode: s = 1, a = 0, r = 1; s = 2, a = 1, r = 1; gamma 0.5: G = (1.5, 1)
    returns = torch.tensor(m.returns_to_go(np.array([1.0, 1.0]), 0.5), dtype=torch.float32)
    obs, actions = torch.tensor([[1.0], [2.0]]), torch.tensor([0, 1])
    policy_loss, baseline_loss = m.losses(agent, obs, actions, returns, args.baseline, args.norm_adv)
    assert policy_loss.item() == pytest.approx(-(1.5 + 1.0) * math.log(0.5) / 2)  # -1/T sum G_t log pi
    assert baseline_loss.item() == 0.0
    policy_loss.backward()
    # d log pi(a|s) / d logits = onehot(a) - pi: t=0 gives 1.5 * (0.5, -0.5) * s=1, t=1 gives 1 * (-0.5, 0.5) * s=2
    # sum (-0.25, 0.25) for W, (0.25, -0.25) for b, times -1/T = -1/2
    assert agent.net[0].weight.grad.flatten().tolist() == pytest.approx([0.125, -0.125])
    assert agent.net[0].bias.grad.tolist() == pytest.approx([-0.125, 0.125])


def test_reinforce_entropy_by_hand_and_defaults_by_action_space() -> None:
    """The entropy bonus's term: ln 3 for a uniform 3-way softmax, 0.5 ln(2 pi e) + log sigma per Gaussian
    dimension; on by default (0.01) for Discrete actions only."""
    m = load_module("reinforce")
    agent = m.Agent(obs_dim=1, act_dim=3, discrete=True, hidden=())
    with torch.no_grad():
        for p in agent.parameters():
            p.zero_()
    assert agent.entropy(torch.tensor([[1.0], [2.0]])).item() == pytest.approx(math.log(3))
    box = m.Agent(obs_dim=1, act_dim=2, discrete=False, hidden=())
    with torch.no_grad():
        box.log_std.copy_(torch.tensor([0.0, math.log(2.0)]))
    assert box.entropy(torch.zeros(4, 1)).item() == pytest.approx(math.log(2 * math.pi * math.e) + math.log(2.0))
    discrete, continuous = m.Args(), m.Args()
    m.check_args(discrete, gym.spaces.Discrete(2))
    m.check_args(continuous, gym.spaces.Box(-1.0, 1.0, (1,)))
    assert (discrete.ent_coef, continuous.ent_coef) == (0.01, 0.0)


def test_reinforce_default_weights_are_normalised_advantages() -> None:
    m = load_module("reinforce")
    agent = m.Agent(obs_dim=1, act_dim=2, discrete=True, hidden=())
    with torch.no_grad():
        for p in agent.parameters():
            p.zero_()  # V = 0 and pi = (0.5, 0.5)
    returns, obs, actions = torch.tensor([3.0, 1.0]), torch.tensor([[1.0], [2.0]]), torch.tensor([0, 1])
    policy_loss, baseline_loss = m.losses(agent, obs, actions, returns, baseline=True, norm_adv=True)
    assert baseline_loss.item() == pytest.approx((9.0 + 1.0) / 2)  # (G - V)^2 with V = 0
    # w = (3, 1) normalised: (1, -1) / sqrt(2) (torch's std is the unbiased one): the log pi terms cancel
    assert policy_loss.item() == pytest.approx(0.0, abs=1e-6)


def test_n_step_returns_terminal_in_the_middle_truncation_at_the_end() -> None:
    m = load_module("a2c")
    rewards = np.array([[1.0], [1.0], [1.0], [1.0]])
    # step 1 ends in a terminal state (V = 0); step 3 is truncated, V(final obs) = 10
    next_values = np.array([[5.0], [0.0], [7.0], [10.0]])
    dones = np.array([[0.0], [1.0], [0.0], [1.0]])
    g = m.n_step_returns(rewards, next_values, dones, gamma=0.5)
    # G_3 = 1 + 0.5 * 10 = 6; G_2 = 1 + 0.5 * 6 = 4; G_1 = 1 (terminal); G_0 = 1 + 0.5 * 1 = 1.5
    assert g[:, 0].tolist() == pytest.approx([1.5, 1.0, 4.0, 6.0])
    # the rollout's end bootstraps with V(s^T) when no episode ended there
    g = m.n_step_returns(np.array([[1.0], [2.0]]), np.array([[3.0], [4.0]]), np.zeros((2, 1)), gamma=0.5)
    assert g[:, 0].tolist() == pytest.approx([1 + 0.5 * (2 + 0.5 * 4), 2 + 0.5 * 4])


@pytest.mark.parametrize("algo", ["a2c", "ppo"])
def test_gae_lambda_0_is_the_td_error_and_lambda_1_the_mc_advantage(algo: str) -> None:
    m = load_module(algo)
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.5], [1.0], [2.0]])
    next_values = np.array([[1.0], [2.0], [0.0]])  # V(s^1), V(s^2); s^3 is terminal
    dones = np.array([[0.0], [0.0], [1.0]])
    a0 = m.gae(rewards, values, next_values, dones, gamma=0.9, lam=0.0).squeeze(1)
    # delta_0 = 1 + 0.9 * 1 - 0.5 = 1.4; delta_1 = 2 + 0.9 * 2 - 1 = 2.8; delta_2 = 3 - 2 = 1
    assert a0.tolist() == pytest.approx([1.4, 2.8, 1.0])
    a1 = m.gae(rewards, values, next_values, dones, gamma=0.9, lam=1.0).squeeze(1)
    # Monte-Carlo: G_2 = 3, G_1 = 2 + 0.9 * 3 = 4.7, G_0 = 1 + 0.9 * 4.7 = 5.23; minus V
    assert a1.tolist() == pytest.approx([5.23 - 0.5, 4.7 - 1.0, 3.0 - 2.0])
    # a done step stops the sum: a second episode after step 0 does not leak back
    dones_mid = np.array([[1.0], [0.0], [1.0]])
    a_mid = m.gae(rewards, values, next_values, dones_mid, gamma=0.9, lam=1.0).squeeze(1)
    assert a_mid[0] == pytest.approx(1.4)


@pytest.mark.parametrize(
    ("ratio", "adv", "loss"),
    [
        (0.5, 2.0, -1.0),  # below 1 - eps, A > 0: min(1.0, 0.8 * 2) = 1.0, unclipped term wins
        (1.1, 2.0, -2.2),  # inside: rho * A
        (1.5, 2.0, -2.4),  # above 1 + eps, A > 0: clipped at 1.2 * 2
        (0.5, -2.0, 1.6),  # below, A < 0: min(-1.0, 0.8 * -2) = -1.6, clipped
        (1.1, -2.0, 2.2),  # inside
        (1.5, -2.0, 3.0),  # above, A < 0: min(-3.0, -2.4) = -3.0, unclipped (no cap on getting worse)
    ],
)
def test_clipped_surrogate(ratio: float, adv: float, loss: float) -> None:
    m = load_module("ppo")
    got = m.clipped_surrogate(torch.tensor([ratio]), torch.tensor([adv]), clip_coef=0.2)
    assert got.item() == pytest.approx(loss)


def test_ppo_numpy_actor_matches_torch() -> None:
    m = load_module("ppo")
    torch.manual_seed(0)
    agent = m.Agent(3, 4, True, (8, 8))
    obs = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    weights = [p.detach().numpy() for p in agent.actor.parameters()]
    expected = agent.actor(torch.from_numpy(obs)).detach().numpy()
    np.testing.assert_allclose(m.mlp_numpy(weights, obs), expected, rtol=1e-5, atol=1e-6)


def test_ppo_sample_action_draws_from_softmax_and_gaussian() -> None:
    m = load_module("ppo")
    n = 200_000
    # Gumbel-max on logits log p draws action i with probability p_i (3 sigma of the count is < 0.004)
    logits = np.log(np.tile([0.1, 0.2, 0.3, 0.4], (n, 1)))
    draws = m.sample_action(logits, None, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / n, [0.1, 0.2, 0.3, 0.4], atol=0.005)
    # the logits are shift invariant: adding 7 changes nothing for the same noise
    assert (m.sample_action(logits + 7.0, None, np.random.default_rng(0)) == draws).all()
    # Box: mean + sigma * N(0, 1) with sigma = exp(log_std)
    a = m.sample_action(np.full((n, 1), 2.0), np.log(np.array([0.5])), np.random.default_rng(0))
    assert abs(a.mean() - 2.0) < 0.005 and abs(a.std() - 0.5) < 0.005


@pytest.mark.parametrize("name", ["ppo", "a2c"])
def test_box_policy_starts_at_init_std(name: str) -> None:
    m = load_module(name)
    args = m.Args()
    assert args.init_std == 0.5  # the Box default (Andrychowicz et al. 2021), a fraction of the half-width
    args.hidden_sizes, args.norm_obs = (8,), False
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,))

    def start_std(low: list[float], high: list[float]) -> list[float]:
        space = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32))
        env = SimpleNamespace(action_space=space, observation_space=obs_space)
        return m.make_agent(args, env).log_std.exp().tolist()

    # [-1, 1] (MuJoCo) starts at 0.5; Pendulum's [-2, 2] at 1.0; an asymmetric [0, 6] at 1.5;
    # an unbounded dimension as if it were [-1, 1]
    assert start_std([-1.0, -2.0], [1.0, 2.0]) == pytest.approx([0.5, 1.0])
    assert start_std([0.0, -np.inf], [6.0, np.inf]) == pytest.approx([1.5, 0.5])
    agent = m.Agent(3, 2, False, (8,), init_std=0.5)
    # the std is learned for Box; Discrete never uses it and it takes no gradient
    assert agent.log_std.requires_grad and not m.Agent(3, 2, True, (8,)).log_std.requires_grad
    # entropy of N(mu, 0.5^2) per dimension: 0.5 + 0.5 ln(2 pi) + ln 0.5, two dimensions
    _, entropy, _ = agent.policy_and_value(torch.zeros(1, 3), torch.zeros(1, 2))
    assert entropy.item() == pytest.approx(2 * (0.5 + 0.5 * math.log(2 * math.pi) + math.log(0.5)), rel=1e-6)


def test_ppo_defaults_by_action_space() -> None:
    """The knobs left at None are filled by the env's action space; a value given on the command line wins."""
    m = load_module("ppo")
    discrete, box = m.Args(), m.Args()
    m.check_args(discrete, gym.spaces.Discrete(2))
    m.check_args(box, gym.spaces.Box(-1.0, 1.0, (1,)))
    # Discrete: rl-zoo's LunarLander settings with 256-step rollouts, 16 x 256 = 4,096 samples in 64 minibatches
    assert (discrete.num_envs, discrete.num_steps, discrete.num_minibatches, discrete.update_epochs) == (16, 256, 64, 4)
    assert (discrete.gamma, discrete.gae_lambda, discrete.ent_coef, discrete.norm_obs) == (0.999, 0.98, 0.01, False)
    # Box: CleanRL's MuJoCo settings, 1 x 2,048 samples in 32 minibatches, observations normalised
    assert (box.num_envs, box.num_steps, box.num_minibatches, box.update_epochs) == (1, 2048, 32, 10)
    assert (box.gamma, box.gae_lambda, box.ent_coef, box.norm_obs) == (0.99, 0.95, 0.0, True)
    assert discrete.norm_reward and box.norm_reward and discrete.learning_rate == box.learning_rate == 3e-4
    flags = ["--gamma", "0.95", "--ent-coef", "0", "--norm-obs", "True", "--norm-reward", "False"]
    given = tyro.cli(m.Args, args=flags)
    m.check_args(given, gym.spaces.Discrete(2))
    assert (given.gamma, given.ent_coef, given.norm_obs, given.norm_reward) == (0.95, 0.0, True, False)
    assert given.num_steps == 256  # the knobs not given still come from the action space


@pytest.mark.parametrize("algo", ["reinforce", "a2c", "ppo"])
def test_gaussian_log_prob_closed_form(algo: str) -> None:
    m = load_module(algo)
    log_std = torch.log(torch.tensor([2.0, 1.0]))
    got = m.gaussian_log_prob(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), log_std)
    # dim 0: -0.5 * (1/2)^2 - ln 2 - 0.5 ln(2 pi); dim 1: -0.5 ln(2 pi)
    half_log_2pi = 0.5 * np.log(2 * np.pi)
    assert got.item() == pytest.approx(-0.125 - np.log(2.0) - 2 * half_log_2pi)
    ref = torch.distributions.Normal(torch.zeros(2), log_std.exp()).log_prob(torch.tensor([1.0, 0.0])).sum()
    assert got.item() == pytest.approx(ref.item())


# ----------------------------------------------------------------------------- ddpg / maddpg
@pytest.mark.parametrize("algo", ["ddpg", "maddpg"])
def test_critic_target_terminal_and_truncation(algo: str) -> None:
    m = load_module(algo)
    rewards = torch.tensor([1.0, 1.0, -2.0])
    next_q = torch.tensor([10.0, 10.0, 4.0])  # Q-bar(s', mu-bar(s'))
    terminated = torch.tensor([1.0, 0.0, 0.0])  # the second and third were truncated or ran on: bootstrap
    y = m.critic_target(rewards, next_q, terminated, gamma=0.9)
    assert y.tolist() == pytest.approx([1.0, 10.0, 1.6])


def test_ddpg_min_target_bootstraps_from_the_smaller_critic() -> None:
    m = load_module("ddpg")
    rewards, terminated = torch.tensor([1.0, 1.0, 0.5]), torch.tensor([0.0, 0.0, 1.0])
    q1, q2 = torch.tensor([10.0, 4.0, 7.0]), torch.tensor([6.0, 8.0, 9.0])
    y = m.min_target(rewards, torch.stack([q1, q2]), terminated, gamma=0.5)
    assert y.tolist() == pytest.approx([1.0 + 0.5 * 6.0, 1.0 + 0.5 * 4.0, 0.5])  # min per sample; none if terminal
    one = m.min_target(rewards, q1[None], terminated, gamma=0.5)  # one critic: DDPG's target, unchanged
    assert one.tolist() == m.critic_target(rewards, q1, terminated, gamma=0.5).tolist()


def test_ddpg_target_smoothing_clips_the_noise_then_the_action() -> None:
    m = load_module("ddpg")
    action = torch.tensor([[0.0, 1.8], [-1.9, 0.5]])  # bounds [-2, 2] in both dimensions
    noise = torch.tensor([[0.3, 0.4], [-2.0, -0.1]])
    clip, low, high = torch.tensor([1.0, 0.5]), torch.tensor([-2.0, -2.0]), torch.tensor([2.0, 2.0])
    out = m.smoothed(action, noise, clip, low, high)
    # 0 + 0.3; 1.8 + 0.4 = 2.2 -> 2 (bounds); -1.9 + (-2 clipped to -1) = -2.9 -> -2; 0.5 - 0.1
    assert out.flatten().tolist() == pytest.approx([0.3, 2.0, -2.0, 0.4])


def test_ou_noise_reverts_to_the_mean() -> None:
    m = load_module("ddpg")
    quiet = m.OUNoise(2, theta=0.15, sigma=0.0, rng=np.random.default_rng(0))
    quiet.x[:] = [1.0, -2.0]
    quiet.sample()
    assert quiet.x.tolist() == pytest.approx([0.85, -1.7])  # x + 0.15 * (0 - x)
    for _ in range(9):
        quiet.sample()
    assert quiet.x.tolist() == pytest.approx([0.85**10, -2.0 * 0.85**10])
    noisy = m.OUNoise(1, theta=0.15, sigma=0.2, rng=np.random.default_rng(0))
    xs = np.array([noisy.sample()[0] for _ in range(50_000)])
    assert abs(xs.mean()) < 0.05  # reverts to mu = 0
    # stationary variance of x' = (1 - theta) x + sigma eps: sigma^2 / (1 - (1 - theta)^2) = 0.1441
    assert xs.var() == pytest.approx(0.04 / (1 - 0.85**2), rel=0.1)
    assert np.corrcoef(xs[:-1], xs[1:])[0, 1] == pytest.approx(0.85, abs=0.02)  # correlated in time


def test_maddpg_critic_input_layout() -> None:
    m = load_module("maddpg")
    obs = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])  # B=1, agents 0 and 1, obs_dim 3
    acts = torch.tensor([[[0.1, 0.2], [0.3, 0.4]]])  # act_dim 2
    x = m.critic_input(obs, acts)[0]
    assert x.shape == (2 * 3 + 2 * 2,)
    assert x[0:3].tolist() == [1.0, 2.0, 3.0]  # agent 0's observation
    assert x[3:6].tolist() == [4.0, 5.0, 6.0]  # agent 1's observation
    assert x[6:8].tolist() == pytest.approx([0.1, 0.2])  # agent 0's action
    assert x[8:10].tolist() == pytest.approx([0.3, 0.4])  # agent 1's action


def test_maddpg_actor_step_swaps_in_only_the_own_action() -> None:
    m = load_module("maddpg")
    buffer_actions = torch.zeros(1, 3, 2)  # B=1, 3 agents
    policy_actions = torch.ones(1, 3, 2)
    joint = m.own_action_swapped(buffer_actions, policy_actions)  # (agent i, B, agent j, act)
    assert joint.shape == (3, 1, 3, 2)
    for i in range(3):
        for j in range(3):
            assert joint[i, 0, j].tolist() == ([1.0, 1.0] if i == j else [0.0, 0.0])


def test_ensemble_linear_equals_separate_layers() -> None:
    m = load_module("maddpg")
    layer = m.EnsembleLinear(3, 4, 2)
    x = torch.randn(3, 5, 4)
    out = layer(x)
    for i in range(3):
        assert torch.allclose(out[i], x[i] @ layer.weight[i] + layer.bias[i], atol=1e-6)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "reinforce"])
def test_running_mean_var_merges_batches_as_one(algo: str) -> None:
    m = load_module(algo)
    # from (almost) nothing: a batch 1, 3 gives mean 2 and variance 1
    mean, var, count = m.update_mean_var(np.zeros(1), np.ones(1), 1e-4, np.array([[1.0], [3.0]]))
    assert mean[0] == pytest.approx(2.0, abs=1e-3) and var[0] == pytest.approx(1.0, abs=1e-3) and count == 2.0001
    # then 5, 7: all four samples 1, 3, 5, 7 have mean 4 and (population) variance (9 + 1 + 1 + 9) / 4 = 5
    mean, var, count = m.update_mean_var(mean, var, count, np.array([[5.0], [7.0]]))
    assert mean[0] == pytest.approx(4.0, abs=1e-3) and var[0] == pytest.approx(5.0, abs=1e-3)
    # one sample at a time (reinforce.py's single env) ends at the same statistics
    mean, var, count = np.zeros(1), np.ones(1), 1e-4
    for x in (1.0, 3.0, 5.0, 7.0):
        mean, var, count = m.update_mean_var(mean, var, count, np.array([[x]]))
    assert mean[0] == pytest.approx(4.0, abs=1e-3) and var[0] == pytest.approx(5.0, abs=1e-3)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "reinforce"])
def test_normalize_centres_scales_and_clips(algo: str) -> None:
    m = load_module(algo)
    x, mean, var = np.array([4.0, 6.0, 1000.0]), np.array([4.0, 4.0, 0.0]), np.array([4.0, 4.0, 1.0])
    out = m.normalize(x, mean, var)  # the rollout's numpy path
    assert out.tolist() == pytest.approx([0.0, 1.0, 10.0], abs=1e-6)  # (x - mean) / 2; 1000 clipped to 10
    # the evaluation's torch path, on the agent's float64 buffers: the same numbers
    out_t = m.normalize(torch.tensor(x, dtype=torch.float32), torch.tensor(mean), torch.tensor(var))
    assert out_t.tolist() == out.tolist()


def test_ddpg_random_steps_default_to_a_tenth_of_the_budget_at_most_25k() -> None:
    m = load_module("ddpg")
    assert m.Args().learning_starts == 3_000  # Pendulum-v1's 30k default budget
    assert m.Args(total_timesteps=300_000).learning_starts == 25_000  # capped: CleanRL's 25k
    assert m.Args(total_timesteps=999).learning_starts == 99
    assert m.Args(total_timesteps=300_000, learning_starts=0).learning_starts == 0  # a given value stays
    parsed = tyro.cli(m.Args, args=["--total-timesteps", "100000"])  # as the command line builds it
    assert parsed.learning_starts == 10_000


def test_ddpg_step_size_defaults_to_6e_4_under_100k_steps_else_3e_4() -> None:
    m = load_module("ddpg")
    assert m.Args().learning_rate == 6e-4  # Pendulum-v1's 30k default budget (and InvertedPendulum-v5's)
    assert m.Args(total_timesteps=99_999).learning_rate == 6e-4
    assert m.Args(total_timesteps=100_000).learning_rate == 3e-4  # CleanRL's MuJoCo step size from 100k on
    assert m.Args(total_timesteps=300_000, learning_rate=1e-4).learning_rate == 1e-4  # a given value stays
    assert tyro.cli(m.Args, args=["--total-timesteps", "300000"]).learning_rate == 3e-4
    assert tyro.cli(m.Args, args=["--learning-rate", "5e-4"]).learning_rate == 5e-4


@pytest.mark.parametrize(("name", "first_step"), [("adam", 1e-3), ("rmsprop", 1e-3 / (0.1 + 1e-5))])
def test_a2c_optimizer_first_step(name: str, first_step: float) -> None:
    """--optimizer: one step on a parameter with gradient 1 at lr 1e-3. Adam's bias-corrected first step is
    lr * 1 / (1 + eps) = 1e-3; RMSprop keeps v = (1 - alpha) g^2 = 0.01 and steps lr * g / (sqrt(v) + eps)."""
    m = load_module("a2c")
    agent = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(agent.weight)
    args = tyro.cli(m.Args, args=["--learning-rate", "1e-3", "--optimizer", name])
    opt = m.make_optimizer(args, agent)
    assert type(opt).__name__ == {"adam": "Adam", "rmsprop": "RMSprop"}[name]
    agent.weight.grad = torch.ones_like(agent.weight)
    opt.step()
    assert -agent.weight.item() == pytest.approx(first_step, rel=1e-4)


def test_a2c_defaults_by_action_space() -> None:
    """Discrete: Adam at 1e-3 on 8 x 32-step rollouts; Box: RMSprop at 2e-3 on 8 x 16 (twice the updates),
    with observation and reward normalisation. A value given on the command line wins."""
    m = load_module("a2c")
    discrete, box = m.Args(), m.Args()
    m.check_args(discrete, gym.spaces.Discrete(2))
    m.check_args(box, gym.spaces.Box(-1.0, 1.0, (1,)))
    assert (discrete.optimizer, discrete.learning_rate, discrete.num_envs, discrete.num_steps) == ("adam", 1e-3, 8, 32)
    assert (discrete.norm_obs, discrete.norm_reward, discrete.ent_coef) == (False, False, 0.01)
    assert (box.optimizer, box.learning_rate, box.num_envs, box.num_steps) == ("rmsprop", 2e-3, 8, 16)
    assert (box.norm_obs, box.norm_reward, box.ent_coef) == (True, True, 0.0)
    given = tyro.cli(m.Args, args=["--optimizer", "adam", "--num-steps", "64"])
    m.check_args(given, gym.spaces.Box(-1.0, 1.0, (1,)))
    assert (given.optimizer, given.num_steps, given.learning_rate) == ("adam", 64, 2e-3)  # the rest from Box
