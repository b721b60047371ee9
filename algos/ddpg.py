"""Deep Deterministic Policy Gradient (DDPG): an off-policy actor-critic for continuous actions.

A deterministic actor mu(s; phi) proposes an action; a critic Q(s, a; theta) learns its value
from replayed transitions with a TD target computed by slowly moving target copies of both
networks; the actor climbs the critic's gradient with respect to the action. Exploration comes
from noise added to the actor's action. Follows the MLMU "Reinforcement Learning" talk (parts
I-III), slide "DDPG - Deterministic Deep Policy Gradient Agent" (actor, critic, Ornstein-Uhlenbeck
noise, clipping, soft update). Steps, in our own numbering of the slide's agent:

    1. Initialise actor mu(s; phi), critic Q(s, a; theta), targets phi-bar = phi,
       theta-bar = theta, and an empty replay buffer.
    2. For each step: observe s; act a = clip(mu(s) + noise, low, high)
       (uniform random actions for the first --learning-starts steps).
    3. Apply a; observe r and s'; store (s, a, r, s', terminated).
    4. Sample a minibatch of transitions.
    5. Critic target y = r + gamma * Q(s', mu(s'; phi-bar); theta-bar), just r if s' is terminal.
    6. Critic step: minimise (y - Q(s, a; theta))^2.
    7. Actor step: maximise Q(s, mu(s; phi); theta), i.e. minimise its negative.
    8. Soft update: theta-bar <- tau theta + (1 - tau) theta-bar, the same for phi-bar.

A time-limit truncation is not terminal: its target bootstraps from the true last state.
The defaults are CleanRL's for MuJoCo (256 x 256 networks, Adam 3e-4, minibatches of 256, 25k random
steps first), scaled to smaller budgets: a tenth of the budget as random steps, and under 100k steps
a larger step size, 6e-4, for the fewer updates. The same defaults learn Pendulum-v1 and
InvertedPendulum-v5 in 30k steps and HalfCheetah-v5 (`gymnasium[mujoco]`) in 300k. Two of TD3's fixes
for the critic's overestimates (Fujimoto et al. 2018) are flags, off by default so the file stays DDPG:
`--twin-critics --target-noise 0.2` (with the default actor step every second critic step, that is TD3).

Examples:
    python algos/ddpg.py                                # Pendulum-v1, 30k steps
    python algos/ddpg.py --noise ou                     # Ornstein-Uhlenbeck noise, as on the slides
    python algos/ddpg.py --env-id HalfCheetah-v5 --total-timesteps 1000000 --cuda
    python algos/ddpg.py --save-model, then --load-model runs/<run>/ddpg.pt --eval-only --capture-video
"""

from __future__ import annotations

import json
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
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class AlgoArgs:
    learning_rate: float | None = None
    """Adam step size of actor and critic (None: 6e-4 for budgets under 100k steps, else CleanRL's 3e-4)"""
    buffer_size: int = 1_000_000
    """replay buffer capacity, in transitions"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """soft update rate of the target networks (step 8)"""
    batch_size: int = 256
    """minibatch size (step 4)"""
    learning_starts: int | None = None
    """env steps of uniform random actions before the first update (None: a tenth of the budget, at most 25,000)"""
    policy_frequency: int = 2
    """critic steps per actor step (and per soft update); 1 is the original DDPG"""
    noise: Literal["gaussian", "ou"] = "gaussian"
    """exploration noise: independent Gaussian, or the Ornstein-Uhlenbeck process of the slides"""
    exploration_noise: float = 0.1
    """noise scale, as a fraction of the half-width of the action range"""
    ou_theta: float = 0.15
    """OU mean-reversion rate"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """widths of the hidden ReLU layers of actor and critic"""
    twin_critics: bool = False
    """TD3's clipped double Q (Fujimoto et al. 2018): two critics, step 5's target takes the smaller"""
    target_noise: float = 0.0
    """TD3's target smoothing: noise on mu'(s') in step 5, per half-width, clipped at 0.5 (0: off, as DDPG)"""
    # the run: this file's env and budget (the knobs every file shares follow in Args, in the run block)
    env_id: str = "Pendulum-v1"
    """gymnasium id of an env with vector observations and Box actions"""
    total_timesteps: int = 30_000
    """training budget, in env steps"""
    eval_frequency: int = 3_000
    """env steps between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 10
    """evaluation episodes with the noise-free actor"""

    def __post_init__(self) -> None:
        if self.learning_starts is None:  # CleanRL's 25k of a 1M budget; a tenth of Pendulum's 30k
            self.learning_starts = min(25_000, self.total_timesteps // 10)
        if self.learning_rate is None:  # few updates need larger steps; 1e-3 could saturate the actor for good
            self.learning_rate = 6e-4 if self.total_timesteps < 100_000 else 3e-4


# ----------------------------------------------------------------------------- math
def critic_target(rewards: torch.Tensor, next_q: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """Step 5: y = r + gamma * Q(s', mu(s'; phi-bar); theta-bar), or r if s' is terminal.
    A truncated s' is not terminal, so it bootstraps."""
    return rewards + gamma * (1.0 - terminated) * next_q


def min_target(rewards: torch.Tensor, next_qs: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """Step 5 over K target critics (K, B): bootstrap from the smallest, which with --twin-critics (K = 2)
    overestimates less than one critic; with K = 1 it is critic_target itself."""
    return critic_target(rewards, next_qs.amin(0), terminated, gamma)


def smoothed(next_action: torch.Tensor, noise: torch.Tensor, clip: torch.Tensor, low: torch.Tensor,
             high: torch.Tensor) -> torch.Tensor:
    """Step 5 with --target-noise: mu'(s') plus noise clipped to [-clip, clip], then kept in the bounds,
    so the target holds for nearby actions rather than for one sharp peak of Q."""
    return torch.clamp(next_action + noise.clamp(-clip, clip), low, high)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Step 8: target <- tau * source + (1 - tau) * target, parameter by parameter."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


class OUNoise:
    """Ornstein-Uhlenbeck process dx = theta (mu - x) dt + sigma dW: temporally correlated noise
    that keeps pushing the same way for a while, then reverts to the mean mu (here 0)."""

    def __init__(self, size: int, theta: float, sigma: float, rng: np.random.Generator, dt: float = 1.0) -> None:
        self.theta, self.sigma, self.dt, self.rng = theta, sigma, dt, rng
        self.x = np.zeros(size)

    def reset(self) -> None:
        self.x[:] = 0.0

    def sample(self) -> np.ndarray:
        noise = self.rng.standard_normal(self.x.shape)
        self.x = self.x + self.theta * (0.0 - self.x) * self.dt + self.sigma * np.sqrt(self.dt) * noise
        return self.x


# ----------------------------------------------------------------------------- networks, buffer
def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """mu(s; phi): tanh squashes to [-1, 1], then scaled and shifted to the action bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, act_dim])
        self.register_buffer("scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs)) * self.scale + self.bias


class Critic(nn.Module):
    """Q(s, a; theta) on the concatenated state and action."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp([obs_dim + act_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


class ReplayBuffer:
    """Ring buffer of preallocated arrays; sampling moves one batch to the device at once."""

    def __init__(self, size: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.obs = np.zeros((size, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((size, obs_dim), dtype=np.float32)
        self.actions = np.zeros((size, act_dim), dtype=np.float32)
        self.rewards = np.zeros(size, dtype=np.float32)
        self.terminated = np.zeros(size, dtype=np.float32)
        self.size, self.pos, self.full, self.device = size, 0, False, device

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        i = self.pos
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.pos = (i + 1) % self.size
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.size if self.full else self.pos, batch_size)
        arrays = (self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx])
        return tuple(torch.from_numpy(a).to(self.device, non_blocking=True) for a in arrays)


class Agent(nn.Module):
    """The actor mu(s; phi) and the critic Q(s, a; theta), with --twin-critics two: what a checkpoint holds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], low: np.ndarray, high: np.ndarray,
                 twin: bool = False) -> None:
        super().__init__()
        self.actor, self.critic = Actor(obs_dim, act_dim, hidden, low, high), Critic(obs_dim, act_dim, hidden)
        self.critic2 = Critic(obs_dim, act_dim, hidden) if twin else None


def make_agent(args: Args, env: gym.Env) -> nn.Module:
    space = env.action_space
    if not np.all(np.isfinite(space.low)) or not np.all(np.isfinite(space.high)):
        raise UsageError(f"{SCRIPT} needs finite action bounds to squash into; {args.env_id} has {space}. Use ppo.py.")
    # [DDPG 1] actor phi and critic theta (their targets and the buffer come with training)
    return Agent(env.observation_space.shape[0], space.shape[0], args.hidden_sizes, space.low, space.high,
                 args.twin_critics)


def act(agent: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The noise-free actor, for evaluation: a = mu(s; phi)."""
    return agent.actor(obs)


# ----------------------------------------------------------------------------- training
def train(args: Args, agent: nn.Module, run: Run) -> None:
    env, device, rng = make_env(args), run.device, np.random.default_rng(args.seed)
    actor, critic = agent.actor, agent.critic
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    # [DDPG 1] target copies phi-bar = phi, theta-bar = theta, and an empty buffer
    actor_target = Actor(obs_dim, act_dim, args.hidden_sizes, low, high).to(device)
    actor_target.load_state_dict(actor.state_dict())
    critics = [c for c in (critic, agent.critic2) if c is not None]
    critic_targets = [Critic(obs_dim, act_dim, args.hidden_sizes).to(device) for _ in critics]
    for c_target, c in zip(critic_targets, critics, strict=True):
        c_target.load_state_dict(c.state_dict())
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    critic_opt = torch.optim.Adam([p for c in critics for p in c.parameters()], lr=args.learning_rate, fused=True)
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)
    half_width = (high - low) / 2.0
    noise_clip = torch.as_tensor(0.5 * half_width, dtype=torch.float32, device=device)  # TD3's c = 0.5
    ou = OUNoise(act_dim, args.ou_theta, args.exploration_noise, rng)

    obs, _ = env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    ep_return, ep_len = 0.0, 0
    actor_loss = torch.zeros(())  # logged before the first actor step
    for global_step in range(1, args.total_timesteps + 1):
        # [DDPG 2] observe s; act with the actor plus exploration noise, clipped to the bounds
        if global_step <= args.learning_starts:
            action = env.action_space.sample()
        else:
            with torch.inference_mode():
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            noise = ou.sample() if args.noise == "ou" else rng.normal(0.0, args.exploration_noise, act_dim)
            action = np.clip(action + noise * half_width, low, high).astype(np.float32)
        # [DDPG 3] apply a, observe r and s', store the transition (s' is the true last state if truncated)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rb.add(obs, action, float(reward), next_obs, terminated)
        ep_return, ep_len = ep_return + float(reward), ep_len + 1
        obs = next_obs
        if terminated or truncated:
            run.log_episode(global_step, ep_return, ep_len)
            obs, _ = env.reset()
            ou.reset()
            ep_return, ep_len = 0.0, 0

        if global_step > args.learning_starts:
            # [DDPG 4] minibatch; [DDPG 5] critic targets from the target networks
            b_obs, b_act, b_rew, b_next_obs, b_term = rb.sample(args.batch_size, rng)
            with torch.no_grad():
                next_act = actor_target(b_next_obs)
                if args.target_noise > 0:
                    eps = torch.randn_like(next_act) * (args.target_noise / 0.5) * noise_clip
                    next_act = smoothed(next_act, eps, noise_clip, actor.bias - actor.scale, actor.bias + actor.scale)
                next_qs = torch.stack([c_target(b_next_obs, next_act) for c_target in critic_targets])
                y = min_target(b_rew, next_qs, b_term, args.gamma)
            # [DDPG 6] critic step on (y - Q(s, a))^2 (each critic's, summed, with --twin-critics)
            q = critic(b_obs, b_act)
            critic_loss = F.mse_loss(q, y) + sum(F.mse_loss(c(b_obs, b_act), y) for c in critics[1:])
            critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_opt.step()
            if global_step % args.policy_frequency == 0:
                # [DDPG 7] actor step: follow dQ/da through a = mu(s)
                actor_loss = -critic(b_obs, actor(b_obs)).mean()
                actor_opt.zero_grad(set_to_none=True)
                actor_loss.backward()
                actor_opt.step()
                # [DDPG 8] soft updates of both targets
                for c_target, c in zip(critic_targets, critics, strict=True):
                    soft_update(c_target, c, args.tau)
                soft_update(actor_target, actor, args.tau)
            if global_step % 100 < args.policy_frequency:  # log now and then: .item() syncs
                run.writer.add_scalar("losses/critic_loss", critic_loss.item(), global_step)
                run.writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                run.writer.add_scalar("losses/q_values", q.mean().item(), global_step)
        if run.tick(global_step):
            break
    env.close()


# ----------------------------------------------------------------------------- what the run block reads
# What this file takes: the run block below checks envs and args against these before anything runs.
ACTION_SPACES = (gym.spaces.Box,)
RANK = 1  # flat vector observations (and Box actions)
ENV_MAKERS: dict = {}  # none of its own: env ids go to gym.make
OTHERWISE = "Use dqn.py or ppo.py for Discrete actions."
POSITIVE = ("learning_rate", "buffer_size", "tau", "batch_size", "policy_frequency", "hidden_sizes")
NON_NEGATIVE = ("learning_starts", "exploration_noise", "ou_theta", "target_noise")
FRACTIONS = ("gamma", "tau")
RULES = {"--batch-size must be no larger than --buffer-size": lambda a: a.batch_size <= a.buffer_size}
WARNINGS = {"--learning-starts >= --total-timesteps: the networks never update":
            lambda a: a.learning_starts >= a.total_timesteps}
ARCHITECTURE = ("hidden_sizes", "twin_critics")  # taken from the checkpoint with --load-model
BY_ACTION_SPACE: dict = {}  # no knob depends on the action space


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
