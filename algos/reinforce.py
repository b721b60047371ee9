"""REINFORCE: Monte-Carlo policy gradient, with a learned state-value baseline.

Play whole episodes with the stochastic policy, compute each step's discounted return-to-go
G_t, and push up log pi(a_t|s_t) in proportion to G_t (minus a baseline V(s_t), which cuts
the variance without biasing the gradient). Follows the MARL book's "Deep Reinforcement Learning"
lecture (Albrecht, Christianos, Schäfer; slides by L. Hinckeldey), slides "REINFORCE Pseudocode"
(steps 1-8) and "Baseline to Reduce Variance":

    1. Initialise the policy network pi with random parameters phi
       (and, with the baseline, the value network V with parameters theta).
    2. For every episode (here: a batch of --episodes-per-update episodes):
    3.   For t = 0 .. T-1:
    4.     Observe s^t.
    5.     Sample a^t ~ pi(.|s^t; phi).
    6.     Apply a^t; observe r^t and s^{t+1}.
    7.   Loss L(phi) = -1/T sum_t (G_t - V(s^t; theta)) log pi(a^t|s^t; phi), with the
         return-to-go G_t = sum_{tau >= t} gamma^(tau - t) r^tau; the baseline's loss is
         L(theta) = 1/T sum_t (G_t - V(s^t; theta))^2. (Discrete: minus 0.01 x the policy's entropy.)
    8.   Update phi (and theta) by minimising the losses.

Discrete actions use a softmax (Categorical) policy with a small entropy bonus, which keeps it near
uniform while every return is alike (Acrobot's -500s before the first swing-up: no signal, so Adam's
steps are noise); Box actions a Gaussian with a learned, state-independent log-std, clipped to the
bounds in the env, and by default the on-policy peers' normalised observations (statistics kept in the
checkpoint) and rewards. A time-limit truncation is not terminal: with the baseline on, G_t bootstraps
from V(final observation); without it there is no critic to bootstrap from and the episode's return is
cut at the limit.

Examples:
    python algos/reinforce.py                          # CartPole-v1, 300k steps, baseline on
    python algos/reinforce.py --no-baseline --no-norm-adv --episodes-per-update 1 --max-grad-norm 0 \
        --no-anneal-lr --ent-coef 0                    # exactly the slides' update: one episode, G_t, fixed alpha
    python algos/reinforce.py --env-id Acrobot-v1 --cuda
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
    learning_rate: float = 2e-3
    """Adam step size at the start (policy and baseline)"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over the budget"""
    gamma: float = 0.99
    """discount factor"""
    baseline: bool = True
    """subtract a learned V(s) from the returns (--no-baseline: plain REINFORCE)"""
    episodes_per_update: int = 4
    """episodes per gradient step: averages the noisy Monte-Carlo gradient over a few episodes"""
    norm_adv: bool = True
    """normalise G - V over the batch (keeps the step size independent of the reward scale)"""
    max_grad_norm: float = 1.0
    """clip the gradient norm to this (0: no clipping)"""
    ent_coef: float | None = None
    """weight of an entropy bonus on the policy (None: 0.01 Discrete, 0 Box)"""
    norm_obs: bool | None = None
    """normalise observations by running mean and std, kept in the checkpoint (None: off Discrete, on Box)"""
    norm_reward: bool | None = None
    """scale rewards by the running std of the discounted return (None: off Discrete, on Box)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """widths of the hidden tanh layers of the policy and of the baseline"""
    # the run: this file's env and budget (the knobs every file shares follow in Args, in the run block)
    env_id: str = "CartPole-v1"
    """gymnasium id of an env with vector observations and Discrete or Box actions"""
    total_timesteps: int = 300_000
    """training budget, in env steps"""
    eval_frequency: int = 30_000
    """env steps between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 10
    """greedy (argmax / mean-action) evaluation episodes"""


# ----------------------------------------------------------------------------- math
def returns_to_go(rewards: np.ndarray, gamma: float, bootstrap: float = 0.0) -> np.ndarray:
    """G_t = r_t + gamma r_{t+1} + ... + gamma^(T-1-t) r_{T-1} + gamma^(T-t) bootstrap.
    `bootstrap` is V(s^T) when the episode was truncated, 0 when it terminated."""
    out = np.zeros(len(rewards), dtype=np.float64)
    running = bootstrap
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def reinforce_loss(logp: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Step 7: -1/T sum_t w_t log pi(a^t|s^t), with w_t = G_t (or G_t - V(s^t)), held constant."""
    return -(weights.detach() * logp).mean()


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
    Numpy arrays in the episodes, tensors at evaluation: the same formula for both."""
    return ((x - mean) / (var + 1e-8) ** 0.5).clip(-10.0, 10.0)


def gaussian_log_prob(action: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(a; mu, sigma^2) summed over action dimensions (independent dimensions)."""
    z = (action - mean) / log_std.exp()
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


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
    """pi(a|s; phi): Categorical over logits, or Gaussian with a learned log-std; the baseline V(s; theta); and
    the observation statistics of --norm-obs (buffers, so the checkpoint carries them and evaluation
    normalises as training did)."""

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, hidden: tuple[int, ...], norm_obs: bool = False
                 ) -> None:
        super().__init__()
        self.discrete = discrete
        self.net = mlp([obs_dim, *hidden, act_dim], 0.01)
        self.log_std = nn.Parameter(torch.zeros(act_dim), requires_grad=not discrete)
        self.critic = mlp([obs_dim, *hidden, 1], 1.0)
        self.register_buffer("norm_obs", torch.tensor(norm_obs))
        self.register_buffer("obs_mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_count", torch.tensor(1e-4, dtype=torch.float64))

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        if self.discrete:
            return torch.multinomial(out.softmax(-1), 1).squeeze(-1)
        return out + self.log_std.exp() * torch.randn_like(out)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        if self.discrete:
            return out.log_softmax(-1).gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        return gaussian_log_prob(action, out, self.log_std)

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        return out.argmax(-1) if self.discrete else out

    def entropy(self, obs: torch.Tensor) -> torch.Tensor:
        """The policy's mean entropy over a batch of states."""
        if self.discrete:
            logp = self.net(obs).log_softmax(-1)
            return -(logp.exp() * logp).sum(-1).mean()
        return (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum()


def losses(agent: Agent, obs: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor, baseline: bool,
           norm_adv: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 7 on a batch: the policy's loss with w_t = G_t, or G_t - V(s^t; theta) with the baseline (then
    normalised over the batch with norm_adv), and the baseline's loss 1/T sum_t (G_t - V(s^t; theta))^2."""
    if baseline:
        values = agent.critic(obs).squeeze(-1)
        baseline_loss, weights = (returns - values).pow(2).mean(), returns - values.detach()
    else:
        baseline_loss, weights = torch.zeros((), device=obs.device), returns
    if norm_adv and len(weights) > 1:
        weights = (weights - weights.mean()) / (weights.std() + 1e-8)
    return reinforce_loss(agent.log_prob(obs, actions), weights), baseline_loss


def make_agent(args: Args, env: gym.Env) -> nn.Module:
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    act_dim = int(env.action_space.n) if discrete else env.action_space.shape[0]
    obs_dim = env.observation_space.shape[0]
    return Agent(obs_dim, act_dim, discrete, args.hidden_sizes, args.norm_obs)  # [REINFORCE 1] phi, theta


def act(agent: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The greedy policy, for evaluation: the most likely action, or the Gaussian's mean."""
    return agent.greedy(normalize(obs, agent.obs_mean, agent.obs_var).float() if agent.norm_obs else obs)


# ----------------------------------------------------------------------------- training
def train(args: Args, agent: nn.Module, run: Run) -> None:
    env, device, discrete = make_env(args), run.device, agent.discrete
    params = list(agent.net.parameters()) + [agent.log_std] + (list(agent.critic.parameters()) if args.baseline else [])
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, fused=True)
    # storage for one batch of whole episodes, preallocated: it can never hold more steps than this
    cap, obs_dim = args.episodes_per_update * env.spec.max_episode_steps, env.observation_space.shape[0]
    obs_buf = np.zeros((cap, obs_dim))  # as the env gave them (float64 holds float32 exactly), scaled per batch
    act_shape, act_type = ((cap,), np.int64) if discrete else ((cap, env.action_space.shape[0]), np.float32)
    act_buf = np.zeros(act_shape, dtype=act_type)
    ret_buf = np.zeros(cap, dtype=np.float32)

    def env_action(action: torch.Tensor) -> int | np.ndarray:
        a = action.cpu().numpy()
        return int(a) if discrete else np.clip(a, env.action_space.low, env.action_space.high)

    # running statistics of --norm-obs (from the agent: a loaded one goes on with its own) and --norm-reward;
    # they stay fixed within a batch (its samples are all scaled alike) and take in its steps after it, which
    # costs one merge per update instead of two per step
    o_mean, o_var, o_count = (x.cpu().numpy().copy() for x in (agent.obs_mean, agent.obs_var, agent.obs_count))
    r_mean, r_var, r_count, disc_ret = np.zeros(1), np.ones(1), 1e-4, 0.0
    disc_buf = np.zeros((cap, 1))  # the discounted return after each step: what --norm-reward's statistics take in

    def scaled(raw: np.ndarray) -> np.ndarray:
        return normalize(raw, o_mean, o_var).astype(np.float32) if args.norm_obs else raw

    raw_obs = env.reset(seed=args.seed)[0]
    env.action_space.seed(args.seed)
    global_step = 0
    while global_step < args.total_timesteps:
        n, batch_start = 0, global_step
        for _episode in range(args.episodes_per_update):  # [REINFORCE 2] a batch of episodes
            ep_start, rewards, done = n, [], False
            while not done:  # [REINFORCE 3] t = 0 .. T-1
                obs_buf[n] = raw_obs  # [REINFORCE 4] observe s^t
                with torch.inference_mode():  # [REINFORCE 5] a^t ~ pi(.|s^t; phi)
                    action = agent.sample(torch.as_tensor(scaled(obs_buf[n]), dtype=torch.float32, device=device))
                act_buf[n] = action.cpu().numpy()
                # [REINFORCE 6] apply a^t, observe r^t and s^{t+1}
                raw_obs, reward, terminated, truncated, _ = env.step(env_action(action))
                rewards.append(float(reward))
                disc_ret = disc_ret * args.gamma * (1.0 - terminated) + rewards[-1]  # as gymnasium's NormalizeReward
                disc_buf[n] = disc_ret
                n += 1
                global_step += 1
                cut = global_step >= args.total_timesteps and not (terminated or truncated)  # by the budget
                truncated = truncated or cut
                done = terminated or truncated
            bootstrap = 0.0  # a truncated episode continues past the limit: estimate the rest with V
            if truncated and not terminated and args.baseline:
                with torch.inference_mode():
                    final_obs = torch.as_tensor(scaled(raw_obs), dtype=torch.float32, device=device)
                    bootstrap = float(agent.critic(final_obs))
            ep_rewards = np.array(rewards)
            if args.norm_reward:  # r / std of the discounted return
                ep_rewards = np.clip(ep_rewards / np.sqrt(r_var[0] + 1e-8), -10.0, 10.0)
            ret_buf[ep_start:n] = returns_to_go(ep_rewards, args.gamma, bootstrap)
            if not cut:  # an episode the budget cut short is trained on, but it is no finished episode
                run.log_episode(global_step, sum(rewards), len(rewards))
            raw_obs = env.reset()[0]
            if global_step >= args.total_timesteps:
                break

        b_obs = torch.as_tensor(scaled(obs_buf[:n]), dtype=torch.float32, device=device)  # as the batch acted on
        if args.norm_obs:
            o_mean, o_var, o_count = update_mean_var(o_mean, o_var, o_count, obs_buf[:n])
        if args.norm_reward:
            r_mean, r_var, r_count = update_mean_var(r_mean, r_var, r_count, disc_buf[:n])
        for buffer, value in ((agent.obs_mean, o_mean), (agent.obs_var, o_var), (agent.obs_count, o_count)):
            buffer.copy_(torch.as_tensor(value))  # the statistics evaluation and the checkpoint use
        # [REINFORCE 7] losses over the batch: -1/T sum (G_t - V(s^t)) log pi(a^t|s^t), and (G_t - V(s^t))^2
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - batch_start / args.total_timesteps)
        b_act = torch.as_tensor(act_buf[:n], device=device)
        b_ret = torch.as_tensor(ret_buf[:n], device=device)
        policy_loss, baseline_loss = losses(agent, b_obs, b_act, b_ret, args.baseline, args.norm_adv)
        loss = policy_loss + 0.5 * baseline_loss
        if args.ent_coef > 0:  # keeps a Discrete policy exploring while every return is alike (Acrobot's -500s)
            loss = loss - args.ent_coef * agent.entropy(b_obs)
        # [REINFORCE 8] update phi (and theta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
        optimizer.step()
        run.writer.add_scalar("losses/policy_loss", policy_loss.item(), global_step)
        run.writer.add_scalar("losses/baseline_loss", baseline_loss.item(), global_step)
        if run.tick(global_step):
            break
    env.close()


# ----------------------------------------------------------------------------- what the run block reads
# What this file takes: the run block below checks envs and args against these before anything runs.
ACTION_SPACES = (gym.spaces.Discrete, gym.spaces.Box)
RANK = 1  # flat vector observations (and Box actions)
ENV_MAKERS: dict = {}  # none of its own: env ids go to gym.make
OTHERWISE = ""
POSITIVE = ("learning_rate", "episodes_per_update", "hidden_sizes")
NON_NEGATIVE = ("max_grad_norm", "ent_coef")
FRACTIONS = ("gamma",)
RULES: dict = {}
WARNINGS: dict = {}
ARCHITECTURE = ("hidden_sizes", "norm_obs")  # taken from the checkpoint with --load-model
# The knobs left at None above, by the env's action space (Box: normalisation as the on-policy peers do it)
BY_ACTION_SPACE = {
    "Discrete": dict(norm_obs=False, norm_reward=False, ent_coef=0.01),
    "Box": dict(norm_obs=True, norm_reward=True, ent_coef=0.0),
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
