"""Proximal Policy Optimization (PPO), clipped surrogate, actor-critic style with GAE.

N synchronous envs each run the current policy for T steps; generalized advantage estimates are
computed from a learned V; then K epochs of minibatch updates minimise the clipped surrogate, which
stops the new policy moving far from the one that collected the data. Follows the MARL book's "Deep
Reinforcement Learning" lecture (Albrecht, Christianos, Schäfer; slides by L. Hinckeldey), slides
"PPO Surrogate Objective" and "Simplified PPO", whose step numbers we use, and M. Straka's lecture
"Multi-Agent RL, PPO, MAPPO" (Charles University, 2022) for PPO "actor-critic style" with N actors,
T steps, K epochs, minibatch M, and GAE. The slides' per-step loop runs here per rollout:

    1. Initialise the actor pi(a|s; phi).        2. Initialise the critic V(s; theta).
    3-4. Repeat: for T steps in each of the N envs:
    5.   Observe s^t.   6. Sample a^t ~ pi(.|s^t; phi).   7. Apply a^t; observe r^t, s^{t+1}.
    8.   Remember pi_beta(a^t|s^t) = pi(a^t|s^t; phi), the behaviour policy's probability
         (here for the whole rollout in one batched pass after it: phi does not change during it).
    11-16. Advantages and critic targets: the slides' one-step TD error
         r^t + gamma V(s^{t+1}) - V(s^t) (just r^t - V(s^t) if s^{t+1} is terminal), averaged over
         n-step horizons by GAE(lambda) (Straka); target y^t = Adv + V(s^t).
    9.   For epoch e = 1..K, for each minibatch of M samples:
    10.    rho = pi(a^t|s^t; phi) / pi_beta(a^t|s^t).
    17.    Actor loss -min(rho Adv, clip(rho, 1 - eps, 1 + eps) Adv) (minus an entropy bonus).
    18.    Critic loss (y^t - V(s^t; theta))^2.
    19-20. Update phi and theta by one gradient step on the summed loss.

Discrete actions use a softmax (Categorical) policy; Box actions a Gaussian with a learned,
state-independent log-std that starts at half the half-width of the action range (`--init-std
0.5`; at a whole half-width HalfCheetah stalled near 2,000), clipped to the bounds in the env.
A time-limit truncation is not terminal: its advantage bootstraps from V(final observation).

Examples:
    python algos/ppo.py --env-id CartPole-v1 --cuda
    python algos/ppo.py --env-id LunarLander-v3 --total-timesteps 1000000  # the same Discrete defaults
    python algos/ppo.py --env-id HalfCheetah-v5 --total-timesteps 1000000  # the Box defaults (MuJoCo settings)
    python algos/ppo.py --save-model, then --load-model runs/<run>/ppo.pt --eval-only --capture-video
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class AlgoArgs:
    learning_rate: float = 3e-4
    """Adam step size at the start"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over the budget"""
    num_envs: int | None = None
    """N: synchronous envs collecting each rollout (None: 16 for Discrete actions, 1 for Box)"""
    num_steps: int | None = None
    """T: steps per env per rollout (None: 256 Discrete, 2048 Box)"""
    gamma: float | None = None
    """discount factor (None: 0.999 Discrete, 0.99 Box)"""
    gae_lambda: float | None = None
    """GAE lambda: 0 is the one-step TD error, 1 the Monte-Carlo advantage (None: 0.98 Discrete, 0.95 Box)"""
    num_minibatches: int | None = None
    """minibatches per epoch, of N * T / num_minibatches samples each (None: 64 Discrete, 32 Box)"""
    update_epochs: int | None = None
    """K: epochs over each rollout (None: 4 Discrete, 10 Box)"""
    norm_obs: bool | None = None
    """normalise observations by running mean and std, kept in the checkpoint (None: off Discrete, on Box)"""
    norm_reward: bool | None = None
    """scale rewards by the running std of the discounted return (None: on, Discrete and Box alike)"""
    norm_adv: bool = True
    """normalise the advantages within each minibatch"""
    clip_coef: float = 0.2
    """epsilon of the clipped surrogate"""
    ent_coef: float | None = None
    """weight of the entropy bonus (None: 0.01 Discrete, 0 Box)"""
    vf_coef: float = 0.5
    """weight of the critic loss"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    target_kl: float | None = None
    """stop the epochs early once the approximate KL exceeds this (None: never)"""
    init_std: float = 0.5
    """Box: the Gaussian's initial std (then learned), per half-width of the action range (Andrychowicz et al. 2021)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """widths of the hidden tanh layers of the actor and of the critic (separate networks)"""
    # the run: this file's env and budget (the knobs every file shares follow in Args, in the run block)
    env_id: str = "CartPole-v1"
    """gymnasium id of an env with vector observations and Discrete or Box actions"""
    total_timesteps: int = 100_000
    """training budget, in env steps"""
    eval_frequency: int = 10_000
    """env steps between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 10
    """greedy (argmax / mean-action) evaluation episodes"""


# ----------------------------------------------------------------------------- math
def gae(
    rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, dones: np.ndarray, gamma: float, lam: float
) -> np.ndarray:
    """Generalized advantage estimates over a rollout of shape (T, N).

    next_values[t] is V(s^{t+1}) for the state actually reached (the final observation when the
    episode was truncated) and 0 when s^{t+1} is terminal; dones[t] = 1 where the episode ended
    at step t (terminated or truncated), which stops the sum from running into the next episode.
      delta_t = r_t + gamma V(s^{t+1}) - V(s^t);   A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}
    """
    advantages = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    deltas = rewards + gamma * next_values - values
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * (1.0 - dones[t]) * running
        advantages[t] = running
    return advantages


def update_mean_var(mean: np.ndarray, var: np.ndarray, count: float, batch: np.ndarray) -> tuple:
    """The running mean and variance of every sample seen, merged with a batch (one sample a row) by
    the parallel formula of Chan et al.: the statistics behind --norm-obs and --norm-reward."""
    b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
    delta, total = b_mean - mean, count + b_count
    m2 = var * count + b_var * b_count + delta**2 * count * b_count / total
    return mean + delta * b_count / total, m2 / total, total


def normalize(x: np.ndarray | torch.Tensor, mean: np.ndarray | torch.Tensor, var: np.ndarray | torch.Tensor
              ) -> np.ndarray | torch.Tensor:
    """(x - mean) / std, clipped to [-10, 10] as the peers do (a rare outlier cannot swamp the network).
    Numpy arrays in the rollout, tensors at evaluation: the same formula for both."""
    return ((x - mean) / (var + 1e-8) ** 0.5).clip(-10.0, 10.0)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """Step 17: mean of -min(rho A, clip(rho, 1 - eps, 1 + eps) A)."""
    return -torch.min(ratio * advantages, ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef) * advantages).mean()


def gaussian_log_prob(action: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(a; mu, sigma^2) summed over action dimensions (independent dimensions)."""
    z = (action - mean) / log_std.exp()
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def mlp_numpy(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The actor's forward pass (Linear, tanh, ..., Linear) in numpy, for acting in the rollout: for a
    handful of states PyTorch's per-call overhead (~90 us a step here) is several times the math."""
    for w, b in zip(weights[0:-2:2], weights[1:-2:2], strict=True):
        x = np.tanh(x @ w.T + b)
    return x @ weights[-2].T + weights[-1]


def sample_action(out: np.ndarray, log_std: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Step 6, a ~ pi(.|s) from the actor's output. Discrete (log_std None): Gumbel-max, argmax of
    logits - log E with E ~ Exp(1), is a draw from softmax(logits). Box: mean + sigma * N(0, 1)."""
    if log_std is None:
        return np.argmax(out - np.log(rng.exponential(size=out.shape)), axis=-1)
    return out + np.exp(log_std) * rng.standard_normal(out.shape)


# ----------------------------------------------------------------------------- networks
def mlp(sizes: list[int], out_std: float) -> nn.Sequential:
    """tanh MLP with orthogonal init; a small last layer keeps the first policy near uniform."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layer = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(layer.weight, out_std if last else math.sqrt(2))
        nn.init.zeros_(layer.bias)
        layers += [layer] if last else [layer, nn.Tanh()]
    return nn.Sequential(*layers)


class Agent(nn.Module):
    """Actor pi(a|s; phi) and critic V(s; theta) as two separate networks, and the observation statistics
    of --norm-obs (buffers, so the checkpoint carries them and evaluation normalises as training did)."""

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, hidden: tuple[int, ...], norm_obs: bool = False,
                 init_std: float | np.ndarray = 1.0) -> None:
        super().__init__()
        self.discrete = discrete
        self.actor = mlp([obs_dim, *hidden, act_dim], 0.01)  # logits, or the Gaussian mean
        self.critic = mlp([obs_dim, *hidden, 1], 1.0)
        log_std = torch.as_tensor(np.log(np.broadcast_to(init_std, (act_dim,))), dtype=torch.float32)
        self.log_std = nn.Parameter(log_std, requires_grad=not discrete)
        self.register_buffer("norm_obs", torch.tensor(norm_obs))
        self.register_buffer("obs_mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_count", torch.tensor(1e-4, dtype=torch.float64))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def policy_and_value(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """log pi(a|s), the policy's entropy and V(s) for a minibatch."""
        out = self.actor(obs)
        if self.discrete:
            logp_all = out.log_softmax(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
            return logp_all.gather(-1, action.long().unsqueeze(-1)).squeeze(-1), entropy, self.value(obs)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum().expand(out.shape[0])
        return gaussian_log_prob(action, out, self.log_std), entropy, self.value(obs)

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.actor(obs)
        return out.argmax(-1) if self.discrete else out


def make_agent(args: Args, env: gym.Env) -> nn.Module:
    space, obs_dim = env.action_space, env.observation_space.shape[0]
    discrete = isinstance(space, gym.spaces.Discrete)
    act_dim = int(space.n) if discrete else space.shape[0]
    half_width = 1.0  # Discrete: unused
    if not discrete:  # the std in the action's own units (Pendulum's [-2, 2] starts at 1.0); unbounded as [-1, 1]
        half_width = np.where(space.bounded_below & space.bounded_above, (space.high - space.low) / 2.0, 1.0)
    return Agent(obs_dim, act_dim, discrete, args.hidden_sizes, args.norm_obs, args.init_std * half_width)  # [PPO 1-2]


def act(agent: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The greedy policy, for evaluation: the most likely action, or the Gaussian's mean."""
    return agent.greedy(normalize(obs, agent.obs_mean, agent.obs_var).float() if agent.norm_obs else obs)


# ----------------------------------------------------------------------------- training
def train(args: Args, agent: nn.Module, run: Run) -> None:
    N, T, device, rng = args.num_envs, args.num_steps, run.device, np.random.default_rng(args.seed)
    # the (T, N) rollout arrays before the envs: a --num-envs too large to hold is refused here, not after building them
    rew_buf, done_buf, cut_buf = (np.zeros((T, N), dtype=np.float32) for _ in range(3))
    envs = gym.vector.SyncVectorEnv(
        [lambda: make_env(args) for _ in range(N)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,  # step() returns the final obs in info
    )
    space, discrete = envs.single_action_space, agent.discrete
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    params = list(agent.parameters())
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=1e-5, fused=True)
    batch_size, obs_dim = T * N, envs.single_observation_space.shape[0]
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = max(1, args.total_timesteps // batch_size)
    run.budget(num_iterations * batch_size, f"{num_iterations} whole rollouts of --num-envs x --num-steps {batch_size}")
    # rollout storage, preallocated host arrays: a step writes numpy, the update moves one batch to the device
    obs_buf, final_obs = np.zeros((T, N, obs_dim), dtype=np.float32), np.zeros((T, N, obs_dim), dtype=np.float32)
    act_buf = np.zeros((T, N) if discrete else (T, N, space.shape[0]), dtype=np.float32)

    def to_device(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=device)

    # running statistics of --norm-obs (from the agent: a loaded one goes on with its own) and --norm-reward
    o_mean, o_var, o_count = (x.cpu().numpy().copy() for x in (agent.obs_mean, agent.obs_var, agent.obs_count))
    r_mean, r_var, r_count, disc_ret = np.zeros(1), np.ones(1), 1e-4, np.zeros(N)

    def scaled(raw: np.ndarray) -> np.ndarray:
        return normalize(raw, o_mean, o_var).astype(np.float32) if args.norm_obs else raw

    def observe(raw: np.ndarray) -> np.ndarray:  # new observations also update the statistics
        nonlocal o_mean, o_var, o_count
        if args.norm_obs:
            o_mean, o_var, o_count = update_mean_var(o_mean, o_var, o_count, raw)
        return scaled(raw)

    obs_np = observe(envs.reset(seed=args.seed)[0])
    ep_ret, ep_len, global_step = np.zeros(N), np.zeros(N, dtype=np.int64), 0
    for iteration in range(num_iterations):  # [PPO 3] repeat
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - iteration / num_iterations)
        # the policy stays fixed during the rollout: act on a host copy of its weights (a view on the CPU)
        actor_w = [p.detach().cpu().numpy() for p in agent.actor.parameters()]
        log_std = None if discrete else agent.log_std.detach().cpu().numpy()
        for t in range(T):  # [PPO 4] T steps in each of the N envs
            obs_buf[t] = obs_np  # [PPO 5] observe s^t
            a_np = sample_action(mlp_numpy(actor_w, obs_buf[t]), log_std, rng)  # [PPO 6] a^t ~ pi(.|s^t)
            act_buf[t] = a_np
            # [PPO 7] apply a^t, observe r^t and s^{t+1}
            env_action = a_np if discrete else np.clip(a_np, space.low, space.high)
            raw_obs, reward, terminated, truncated, info = envs.step(env_action)
            obs_np, global_step = observe(raw_obs), global_step + N
            ep_ret, ep_len = ep_ret + reward, ep_len + 1
            if args.norm_reward:  # r / std of the discounted return, as gymnasium's NormalizeReward
                disc_ret = disc_ret * args.gamma * (1.0 - terminated) + reward
                r_mean, r_var, r_count = update_mean_var(r_mean, r_var, r_count, disc_ret[:, None])
                reward = np.clip(reward / np.sqrt(r_var + 1e-8), -10.0, 10.0)
            rew_buf[t], done_buf[t], cut_buf[t] = reward, terminated | truncated, truncated & ~terminated
            for i in np.flatnonzero(terminated | truncated):
                run.log_episode(global_step, ep_ret[i], ep_len[i])
                ep_ret[i], ep_len[i] = 0.0, 0
                if cut_buf[t, i]:  # a time limit, not a terminal state: V(final obs) still counts
                    final_obs[t, i] = scaled(info["final_obs"][i])

        for buffer, value in ((agent.obs_mean, o_mean), (agent.obs_var, o_var), (agent.obs_count, o_count)):
            buffer.copy_(torch.as_tensor(value))  # the statistics evaluation and the checkpoint use
        b_obs, b_act = to_device(obs_buf).reshape(batch_size, obs_dim), to_device(act_buf).flatten(0, 1)
        cut = cut_buf > 0
        with torch.no_grad():
            # [PPO 8] pi_beta(a^t|s^t) and V(s^t) for the whole rollout in one batched pass: the
            # policy did not change while the rollout ran, and one pass costs less than T small ones
            b_logp, _, b_val = agent.policy_and_value(b_obs, b_act)
            last_value = agent.value(to_device(obs_np)).cpu().numpy()
            cut_values = agent.value(to_device(final_obs[cut])).cpu().numpy() if cut.any() else None
        # [PPO 11-16] advantages and critic targets; V(s^{t+1}) is the next stored value,
        # V(final obs) after a truncation and 0 after a termination
        val_np = b_val.cpu().numpy().reshape(T, N)
        next_values = np.concatenate([val_np[1:], last_value[None]]) * (1.0 - done_buf)
        if cut_values is not None:
            next_values[cut] = cut_values
        advantages = gae(rew_buf, val_np, next_values, done_buf, args.gamma, args.gae_lambda)
        b_adv = to_device(advantages).reshape(-1)
        b_ret = b_adv + b_val
        ratios = []  # every minibatch's rho, for the clip fraction logged once per update
        for _epoch in range(args.update_epochs):  # [PPO 9] K epochs of minibatches
            perm = torch.randperm(batch_size, device=device)
            # shuffle once per epoch; each minibatch is then a slice (a view), not five gathers
            e_obs, e_act, e_logp, e_adv, e_ret = (x[perm] for x in (b_obs, b_act, b_logp, b_adv, b_ret))
            for lo in range(0, batch_size, minibatch_size):
                mb = slice(lo, lo + minibatch_size)
                new_logp, entropy, new_val = agent.policy_and_value(e_obs[mb], e_act[mb])
                log_ratio = new_logp - e_logp[mb]
                ratio = log_ratio.exp()  # [PPO 10] rho = pi / pi_beta
                mb_adv = e_adv[mb]
                if args.norm_adv and minibatch_size > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = clipped_surrogate(ratio, mb_adv, args.clip_coef)  # [PPO 17] actor loss
                v_loss = 0.5 * (e_ret[mb] - new_val).pow(2).mean()  # [PPO 18] critic loss
                loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad(set_to_none=True)  # [PPO 19-20] one step on phi and theta
                loss.backward()
                nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
                optimizer.step()
                ratios.append(ratio.detach())
            with torch.no_grad():  # low-variance KL estimate on the epoch's last minibatch
                approx_kl = ((ratio - 1) - log_ratio).mean()
            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        var_y = b_ret.var()
        explained_var = float("nan") if var_y == 0 else float(1 - (b_ret - b_val).var() / var_y)
        clipfrac = ((torch.cat(ratios) - 1.0).abs() > args.clip_coef).float().mean()
        for tag, value in (("policy_loss", pg_loss), ("value_loss", v_loss), ("entropy", entropy.mean()),
                           ("approx_kl", approx_kl), ("clipfrac", clipfrac), ("explained_variance", explained_var)):
            run.writer.add_scalar(f"losses/{tag}", torch.as_tensor(value).item(), global_step)
        run.writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        if run.tick(global_step):
            break
    envs.close()


# ----------------------------------------------------------------------------- what the run block reads
# What this file takes: the run block below checks envs and args against these before anything runs.
ACTION_SPACES = (gym.spaces.Discrete, gym.spaces.Box)
RANK = 1  # flat vector observations (and Box actions)
ENV_MAKERS: dict = {}  # none of its own: env ids go to gym.make
OTHERWISE = ""
POSITIVE = ("learning_rate", "num_envs", "num_steps", "num_minibatches", "update_epochs", "clip_coef", "max_grad_norm",
            "init_std", "hidden_sizes")
NON_NEGATIVE = ("ent_coef", "vf_coef")
FRACTIONS = ("gamma", "gae_lambda")
RULES = {"--num-envs x --num-steps must split evenly into --num-minibatches minibatches":
         lambda a: (a.num_envs * a.num_steps) % a.num_minibatches == 0}
WARNINGS: dict = {}
ARCHITECTURE = ("hidden_sizes", "norm_obs")  # taken from the checkpoint with --load-model
# The knobs left at None above, by the env's action space. Discrete: rl-zoo's LunarLander settings with
# rollouts of 256 steps instead of 1,024, so a 100k-step CartPole still gets 24 updates. Box: the peers'
# MuJoCo settings (CleanRL's ppo_continuous_action, rl-zoo's normalisation; --init-std above is Box-only).
BY_ACTION_SPACE = {
    "Discrete": dict(num_envs=16, num_steps=256, gamma=0.999, gae_lambda=0.98, num_minibatches=64, update_epochs=4,
                     ent_coef=0.01, norm_obs=False, norm_reward=True),
    "Box": dict(num_envs=1, num_steps=2048, gamma=0.99, gae_lambda=0.95, num_minibatches=32, update_epochs=10,
                ent_coef=0.0, norm_obs=True, norm_reward=True),
}


# ====================================================================== run block: the same in every deep file
# The same text in all seven deep files (a test compares them): checks, run directory, TensorBoard, progress,
# evaluation, video, checkpoints, Ctrl-C, summary. It reads the data above and calls make_agent, act and train.
SCRIPT = os.path.basename(__file__)


@dataclass
class Args(AlgoArgs):
    # the knobs above, then the run's own, the same in every file (tyro lists them in this order)
    seed: int = 1
    """seed of python, numpy, torch and the envs (evaluation episodes are seeded apart from training)"""
    max_episode_steps: int = 1_000
    """time limit for envs that have none"""
    cuda: bool = False
    """use the GPU if there is one"""
    torch_deterministic: bool = True
    """torch.use_deterministic_algorithms (warn-only) and cuDNN's deterministic mode: same seed, same run"""
    num_threads: int = 1
    """torch CPU threads; 1 measured fastest for these small networks"""
    log_dir: str = "runs"
    """root folder of the run directories"""
    exp_name: str = SCRIPT[: -len(".py")]
    """experiment name, part of the run directory"""
    save_model: bool = False
    """save the agent, any normalisation statistics and the args to {run_dir}/{exp_name}.pt (also on Ctrl-C)"""
    load_model: str | None = None
    """start from this --save-model checkpoint (it also sets the knobs the agent was built with, e.g. --hidden-sizes)"""
    eval_only: bool = False
    """with --load-model: only evaluate the loaded agent, no training"""
    capture_video: bool = False
    """film the final evaluation episodes to {run_dir}/videos/*.mp4"""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def warn(message: str) -> None:
    print(f"{SCRIPT}: warning: {message}", file=sys.stderr, flush=True)


def make_env(args: Args, render_mode: str | None = None) -> gym.Env:
    """The env by id, checked against what this file takes, with a time limit if it has none."""
    try:
        if ENV_MAKERS and args.env_id not in ENV_MAKERS:
            raise gym.error.Error(f"{SCRIPT} runs {', '.join(ENV_MAKERS)}")
        make = ENV_MAKERS[args.env_id] if ENV_MAKERS else lambda args, mode: gym.make(args.env_id, render_mode=mode)
        env = make(args, render_mode)
    except (gym.error.DependencyNotInstalled, ImportError) as e:  # a registered env whose extra is missing
        raise UsageError(f"{args.env_id} needs a package that is not installed: {e}") from None
    except gym.error.Error as e:
        raise UsageError(f"unknown env id {args.env_id!r} ({e}).") from None
    except AssertionError as e:  # an env that refuses a flag passed to it (maddpg's --local-ratio)
        raise UsageError(f"{args.env_id} refused its arguments: {e}") from None
    obs, act, problem = env.observation_space, env.action_space, ""
    if not isinstance(act, ACTION_SPACES) or (isinstance(act, gym.spaces.Box) and len(act.shape) != RANK):
        kinds = " or ".join((f"{RANK}-D " if t is gym.spaces.Box else "") + t.__name__ for t in ACTION_SPACES)
        problem = f"{SCRIPT} needs a {kinds} action space; {args.env_id} has {act}. {OTHERWISE}"
    elif not isinstance(obs, gym.spaces.Box) or len(obs.shape) != RANK:
        hint = "Use tabular_q.py for Discrete observations." if isinstance(obs, gym.spaces.Discrete) else ""
        hint = "Images need a convolutional network; this file has none." if len(obs.shape or ()) > RANK + 1 else hint
        hint = "gymnasium.wrappers.FlattenObservation in make_env turns it into one." if obs.shape is None else hint
        problem = f"{SCRIPT} takes vector observations (a Box of rank {RANK}); {args.env_id} has {obs}. {hint}"
    if problem:
        env.close()
        raise UsageError(" ".join(problem.split()))  # one line, even for a Box whose repr spans several
    if env.spec is None or env.spec.max_episode_steps is None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=max(args.max_episode_steps, 1))  # checked next
    return env


def check_args(args: Args, space: gym.Space) -> None:
    """Fills the knobs left at None from BY_ACTION_SPACE, then checks the rules above and the run's own."""
    for name, value in BY_ACTION_SPACE.get(type(space).__name__, {}).items():
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    positive = (*POSITIVE, "total_timesteps", "eval_episodes", "num_threads", "max_episode_steps")
    for name in (*positive, *NON_NEGATIVE, *FRACTIONS, "eval_frequency"):
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        values = value if isinstance(value, tuple) else (value,)
        if name in FRACTIONS and not all(0.0 <= v <= 1.0 for v in values):
            raise UsageError(f"{flag} must lie in [0, 1], got {value}.")
        if not all(0 < v < float("inf") if name in positive else 0 <= v < float("inf") for v in values):  # nan too
            raise UsageError(f"{flag} must be {'positive' if name in positive else '>= 0'} and finite, got {value}.")
    cpus = os.cpu_count() or 1  # more threads than CPUs only slows torch down, and tens of thousands crash it
    rules = {**RULES, "--eval-only needs --load-model PATH": lambda a: a.load_model or not a.eval_only,
             f"--seed must lie in [0, 2**32 - 1] (numpy's range), got {args.seed}": lambda a: 0 <= a.seed < 2**32,
             f"--num-threads must not exceed the {cpus} CPUs, got {args.num_threads}": lambda a: a.num_threads <= cpus}
    for message, holds in rules.items():
        if not holds(args):
            raise UsageError(message + ".")
    for message, holds in WARNINGS.items():
        if holds(args) and not args.eval_only:
            warn(message)


class Run:
    """What the training loop reports to: run directory and TensorBoard, the clock (less evaluation time),
    progress lines every 2 s, periodic evaluations and the Ctrl-C flag."""

    def __init__(self, args: Args, agent: nn.Module, device: torch.device) -> None:
        self.args, self.agent, self.device, stamp = args, agent, device, int(time.time())
        while True:  # never reuse a run directory: makedirs fails if another run holds the name
            try:
                os.makedirs(name := os.path.join(args.log_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__{stamp}"))
                break
            except FileExistsError:
                stamp += 1
            except OSError as e:  # --log-dir is a file, or cannot be written
                raise UsageError(f"cannot make {name} ({e.strerror or e}): use another --log-dir.") from None
        self.dir, self.writer = name, SummaryWriter(name)
        table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
        self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        self.final_step, self.step, self.stop, self.next_eval = args.total_timesteps, 0, False, args.eval_frequency
        self.recent, self.evals, self.eval_seconds = deque(maxlen=20), [], 0.0  # evals: [step, s, mean, std]
        self.start = self.last_print = time.perf_counter()
        print(f"{SCRIPT} on {args.env_id} seed {args.seed} {device}: {name}", f"(tensorboard --logdir {args.log_dir})")

    def budget(self, steps: int, why: str) -> None:  # the loop runs `steps`, not --total-timesteps
        if steps != self.args.total_timesteps:
            warn(f"training {steps:,} steps, not --total-timesteps {self.args.total_timesteps:,}: {why}")
        self.final_step = steps

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.eval_seconds

    def log_episode(self, step: int, episodic_return: float, length: int) -> None:
        self.writer.add_scalar("charts/episodic_return", episodic_return, step)
        self.writer.add_scalar("charts/episodic_length", length, step)
        self.recent.append(float(episodic_return))

    def record_eval(self, step: int, seconds: float, returns: list[float]) -> None:
        mean, std = float(np.mean(returns)), float(np.std(returns))
        self.writer.add_scalar("eval/episodic_return", mean, step)
        self.evals.append([step, round(seconds, 3), mean, std])
        print(f"eval at step {step:,}: {mean:.2f} ± {std:.2f} over {len(returns)} episodes", flush=True)

    def tick(self, step: int) -> bool:
        """The end of a pass of the loop at env step `step`: evaluate when due, print progress every 2 s.
        True once Ctrl-C was pressed: the loop then breaks, where no step is half done."""
        self.step = step
        if self.next_eval and self.final_step > step >= self.next_eval:
            self.next_eval += self.args.eval_frequency
            t0 = time.perf_counter()
            returns = evaluate(self.agent, self.args, self.device)
            self.eval_seconds += time.perf_counter() - t0
            self.record_eval(step, self.seconds(), returns)
        if (now := time.perf_counter()) - self.last_print > 2.0 or step >= self.final_step:
            sps, self.last_print = step / max(self.seconds(), 1e-9), now
            self.writer.add_scalar("charts/SPS", int(sps), step)
            recent = f"{np.mean(self.recent):.2f} (mean of last {len(self.recent)} episodes)" if self.recent else "-"
            print(f"step {step:,}/{self.final_step:,} ({100 * step / self.final_step:.0f}%)  return {recent}  "
                  f"SPS {sps:,.0f}  ETA {max(self.final_step - step, 0) / sps:.0f}s", flush=True)
        return self.stop


@torch.inference_mode()
def evaluate(agent: nn.Module, args: Args, device: torch.device, video_dir: str | None = None) -> list[float]:
    """`act` above for --eval-episodes episodes on a fresh env, episode i seeded apart from training with
    seed + 10,000 (i + 1); with video_dir, every episode is filmed there as mp4."""
    env = make_env(args, render_mode="rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda i: True, name_prefix="eval")
    space, returns = env.action_space, []
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 * (i + 1))
        done, total = False, 0.0
        while not done:
            action = act(agent, torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            action = int(action) if isinstance(space, gym.spaces.Discrete) else np.clip(action, space.low, space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + np.asarray(reward, dtype=np.float64), terminated or truncated  # maddpg: per agent
        returns.append(float(np.mean(total)))
    env.close()
    return returns


def check_video(args: Args) -> None:
    """--capture-video: check moviepy and render one frame before training rather than fail after it.
    Without a display, MuJoCo renders through EGL (MUJOCO_GL=egl), as a headless Linux server needs; a set
    MUJOCO_GL stays."""
    if sys.platform == "linux" and not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")
    env = make_env(args, render_mode="rgb_array")
    try:
        with tempfile.TemporaryDirectory() as scratch:  # RecordVideo refuses at once without moviepy, its mp4 writer,
            gym.wrappers.RecordVideo(env, os.path.join(scratch, "videos"))  # which a copied-to project may lack
        env.reset(seed=args.seed)
        env.render()
    except gym.error.DependencyNotInstalled as e:
        raise UsageError(f"--capture-video cannot film: {e}") from None
    except Exception as e:  # noqa: BLE001 (no OpenGL, no display: whatever the renderer says, in one line)
        raise UsageError(f"--capture-video cannot render {args.env_id}: {str(e).splitlines()[0]} "
                         "(MuJoCo: try MUJOCO_GL=egl or MUJOCO_GL=osmesa).") from None
    finally:
        env.close()


def load_checkpoint(args: Args) -> dict:
    """A checkpoint of --save-model; its ARCHITECTURE args replace the given ones (an older one may lack some)."""
    try:
        ckpt = torch.load(args.load_model, map_location="cpu", weights_only=True)
    except OSError as e:  # missing, a folder, unreadable
        raise UsageError(f"cannot read --load-model {args.load_model}: {e.strerror or e}.") from None
    except Exception:  # noqa: BLE001 (torch's own message suggests weights_only=False, unsafe for a stray file)
        ckpt = None  # a file of another kind: refused next, as another file's checkpoint is
    if not isinstance(ckpt, dict) or ckpt.get("algo") != SCRIPT:
        raise UsageError(f"--load-model {args.load_model} was not written by {SCRIPT} --save-model.")
    if (saved := ckpt["args"]["env_id"]) != args.env_id:
        raise UsageError(f"--load-model {args.load_model} was trained on {saved}: add --env-id {saved}.")
    for name, value in ((name, ckpt["args"].get(name, getattr(args, name))) for name in ARCHITECTURE):
        setattr(args, name, tuple(value) if isinstance(value, list) else value)
    return ckpt


# numpy's and torch's words when they refuse an array: too large for memory, or for 64-bit sizes
TOO_LARGE = ("Unable to allocate", "array is too big", "Maximum allowed dimension exceeded", "can't allocate memory",
             "out of memory", "Overflow when unpacking long")


def too_large(err: Exception) -> str | None:
    """The first line of numpy's or torch's refusal of an array too large to hold; None for any other error."""
    text = str(err)
    sign = next((s for s in TOO_LARGE if s in text), None)
    if sign is None:
        return "out of memory" if isinstance(err, MemoryError) else None
    return text[text.index(sign):].splitlines()[0]


def main(args: Args) -> dict:
    env = make_env(args)  # checks the spaces before anything is written
    check_args(args, env.action_space)
    if args.capture_video:  # one frame now, not a crash after the training
        check_video(args)
    if args.cuda and not torch.cuda.is_available():
        warn("--cuda given but CUDA is not available; running on CPU")
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.num_threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_deterministic:  # CPU runs are deterministic anyway; this pins the GPU's kernels too
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
    ckpt = load_checkpoint(args) if args.load_model else None
    agent = make_agent(args, env).to(device)
    env.close()
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
    run = Run(args, agent, device)

    def on_ctrl_c(signum: int, frame: object) -> None:  # the first press stops the loop, a second aborts
        if run.stop:
            raise KeyboardInterrupt
        run.stop = True

    # only the main thread may set handlers; a SIGINT that arrives ignored (a background job) stays ignored
    catch = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN
    previous = signal.signal(signal.SIGINT, on_ctrl_c) if catch else None
    try:
        if not args.eval_only:
            train(args, agent, run)
    except Exception as err:  # too_large picks the refusals out; __main__ reports them
        if run.step == 0 and too_large(err):  # refused before its first step: leave no empty run folder behind
            run.writer.close()
            shutil.rmtree(run.dir, ignore_errors=True)
        raise
    finally:
        if catch:
            signal.signal(signal.SIGINT, previous)
    train_seconds = run.seconds() if not args.eval_only else 0.0
    sps = run.step / max(train_seconds, 1e-9)
    run.writer.add_scalar("charts/SPS", int(sps), run.step)
    # saved before the final evaluation: a failure while filming loses no training
    checkpoint = os.path.join(run.dir, f"{args.exp_name}.pt") if args.save_model else None
    if checkpoint:
        torch.save({"algo": SCRIPT, "agent": agent.state_dict(), "args": asdict(args)}, checkpoint)
    video_dir = os.path.join(run.dir, "videos") if args.capture_video and not run.stop else None
    returns = [] if run.stop else evaluate(agent, args, device, video_dir)
    if returns:
        run.record_eval(run.step, train_seconds, returns)
    run.writer.close()
    mean, std = (float(np.mean(returns)), float(np.std(returns))) if returns else (None, None)
    words = [f"greedy eval {mean:.2f} ± {std:.2f} over {len(returns)} episodes" if returns else "interrupted: no eval"]
    words += [f"checkpoint at {checkpoint}"] * bool(checkpoint) + [f"videos in {video_dir}"] * bool(video_dir)
    print(f"{SCRIPT}: " + "; ".join(words), flush=True)
    return {"algo": SCRIPT[:-3], "env_id": args.env_id, "seed": args.seed, "total_timesteps": run.step,
            "eval_return_mean": mean, "eval_return_std": std, "train_seconds": round(train_seconds, 3),
            "sps": round(sps, 1), "run_dir": run.dir, "interrupted": run.stop, "evals": run.evals,
            "checkpoint": checkpoint}


if __name__ == "__main__":
    try:
        summary = main(tyro.cli(Args))
    except UsageError as err:
        print(f"{SCRIPT}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except (MemoryError, RuntimeError, TypeError, ValueError) as err:
        reason = too_large(err)  # a buffer, rollout or network larger than any machine: one line
        if reason is None:
            raise  # anything else is a bug, shown in full
        print(f"{SCRIPT}: error: too large to allocate: {reason}; ask for a smaller buffer, rollout or network.",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the loop: stop now, nothing saved
        os._exit(130)  # at once: no shutdown handlers that a late Ctrl-C could interrupt again
    print(json.dumps(summary), flush=True)
    sys.exit(130 if summary["interrupted"] else 0)
