"""Multi-Agent DDPG (MADDPG): centralised training, decentralised execution.

Each agent i has its own deterministic actor mu_i(o_i), which sees only its own observation,
and its own critic Q_i(x, a_1, ..., a_n), which sees every agent's observation x and action.
Because the critic conditions on all actions, the environment looks stationary to it even as
the other agents' policies change. Follows the MLMU "Reinforcement Learning" talk (parts I-III),
slides "Implementing MADDPG" (centralised critics over all observations and actions, decentralised
actors) on top of its DDPG agent. Steps, in our own numbering:

    1. Initialise, per agent, actor mu_i, critic Q_i, their targets, and one replay buffer
       holding joint transitions (o_1..o_n, a_1..a_n, r_1..r_n, o'_1..o'_n).
    2. Each step every agent acts on its own observation: a_i = mu_i(o_i) + noise, mapped
       into the env's [0, 1] action range (uniform random for the first --learning-starts steps).
    3. Apply the joint action; store the joint transition.
    4. Every --train-frequency steps, sample a minibatch of joint transitions.
    5. Critic targets y_i = r_i + gamma Q-bar_i(x', mu-bar_1(o'_1), ..., mu-bar_n(o'_n)).
    6. Critic step for every agent: minimise (y_i - Q_i(x, a_1, ..., a_n))^2.
    7. Actor step for every agent: maximise Q_i(x, a_1, ..., mu_i(o_i), ..., a_n), its own action
       replaced by its actor's, the others' taken from the buffer.
    8. Soft update of every target network.

All agents' networks are evaluated together as batched ("ensemble") layers, one matrix product
per layer for all n agents; agents with smaller observations or actions are zero-padded to the
largest. Every MPE episode ends by truncation after --max-cycles steps: targets bootstrap. The
PettingZoo env is wrapped as one gymnasium env of joint (agents x features) arrays, so evaluation,
video and checkpoints below the marker are the same code as in the single-agent files.

Examples:
    python algos/maddpg.py                                    # simple_spread_v3, 3 agents
    python algos/maddpg.py --env-id simple_speaker_listener_v4 --cuda
    python algos/maddpg.py --env-id simple_tag_v3 --total-timesteps 500000
    python algos/maddpg.py --save-model, then --load-model runs/<run>/maddpg.pt --eval-only --capture-video
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
import torch.nn.functional as F
import tyro
from mpe2 import simple_adversary_v3, simple_speaker_listener_v4, simple_spread_v3, simple_tag_v3
from torch.utils.tensorboard import SummaryWriter


@dataclass
class AlgoArgs:
    max_cycles: int = 25
    """episode length of the MPE env (every episode ends by truncation)"""
    local_ratio: float = 0.5
    """simple_spread only: weight of each agent's local reward against the shared one"""
    learning_rate: float = 1e-3
    """Adam step size of actors and critics"""
    buffer_size: int = 1_000_000
    """replay buffer capacity, in joint transitions"""
    gamma: float = 0.95
    """discount factor (episodes are 25 steps long)"""
    tau: float = 0.01
    """soft update rate of the target networks"""
    batch_size: int = 1024
    """minibatch size of joint transitions"""
    learning_starts: int = 5_000
    """joint steps of uniform random actions before the first update"""
    train_frequency: int = 25
    """joint env steps between updates (one update of every agent's critic and actor)"""
    exploration_noise: float = 0.1
    """std of the Gaussian noise added to the actions (the action range is [0, 1])"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """widths of the hidden ReLU layers of every actor and critic"""
    # the run: this file's env and budget (the knobs every file shares follow in Args, in the run block)
    env_id: str = "simple_spread_v3"
    """MPE env from mpe2: simple_spread_v3, simple_adversary_v3, simple_speaker_listener_v4, simple_tag_v3"""
    total_timesteps: int = 300_000
    """training budget, in joint env steps"""
    eval_frequency: int = 30_000
    """env steps between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 100
    """evaluation episodes with noise-free actors (returns are per agent: the mean over agents)"""


# ----------------------------------------------------------------------------- math
def critic_input(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The centralised critic's input x, a_1..a_n from obs (B, n, obs_dim) and actions
    (B, n, act_dim): [o_1, ..., o_n, a_1, ..., a_n] flattened, so agent i's observation is
    columns i*obs_dim:(i+1)*obs_dim and its action n*obs_dim + i*act_dim : n*obs_dim + (i+1)*act_dim."""
    return torch.cat([obs.flatten(-2), actions.flatten(-2)], dim=-1)


def own_action_swapped(buffer_actions: torch.Tensor, policy_actions: torch.Tensor) -> torch.Tensor:
    """Step 7's joint actions, one set per agent i: agent i's own action from its actor,
    everyone else's from the buffer. (B, n, act) x 2 -> (n, B, n, act)."""
    n = buffer_actions.shape[1]
    own = torch.eye(n, dtype=torch.bool, device=buffer_actions.device).view(n, 1, n, 1)
    return torch.where(own, policy_actions.unsqueeze(0), buffer_actions.unsqueeze(0))


def critic_target(rewards: torch.Tensor, next_q: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """Step 5: y_i = r_i + gamma * Q-bar_i(x', mu-bar(o')), or r_i if the episode terminated.
    MPE episodes only truncate, so in practice they always bootstrap."""
    return rewards + gamma * (1.0 - terminated) * next_q


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Step 8: target <- tau * source + (1 - tau) * target, parameter by parameter."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


# ----------------------------------------------------------------------------- networks, buffer
class EnsembleLinear(nn.Module):
    """n independent linear layers applied in one batched matrix product: (n, B, in) -> (n, B, out)."""

    def __init__(self, n: int, fan_in: int, fan_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default init, per member
        self.weight = nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, fan_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def ensemble_mlp(n: int, sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(EnsembleLinear(n, sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Actors(nn.Module):
    """mu_i(o_i) for every agent i at once; outputs in [0, 1], padded action dims held at 0."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: tuple[int, ...], act_mask: torch.Tensor):
        super().__init__()
        self.net = ensemble_mlp(n, [obs_dim, *hidden, act_dim])
        self.register_buffer("act_mask", act_mask.unsqueeze(1))  # (n, 1, act_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (B, n, obs_dim) -> actions (B, n, act_dim)."""
        out = self.net(obs.transpose(0, 1))  # each agent's actor sees only its own observation
        return ((torch.tanh(out) + 1.0) * 0.5 * self.act_mask).transpose(0, 1)


class Critics(nn.Module):
    """Q_i(x, a_1..a_n) for every agent i: input (n, B, n*obs + n*act) -> (n, B)."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = ensemble_mlp(n, [n * (obs_dim + act_dim), *hidden, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ReplayBuffer:
    """Joint transitions in preallocated arrays; one batch moves to the device at once."""

    def __init__(self, size: int, n: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.obs = np.zeros((size, n, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((size, n, obs_dim), dtype=np.float32)
        self.actions = np.zeros((size, n, act_dim), dtype=np.float32)
        self.rewards = np.zeros((size, n), dtype=np.float32)
        self.terminated = np.zeros((size, n), dtype=np.float32)
        self.size, self.pos, self.full, self.device = size, 0, False, device

    def add(
        self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray
    ) -> None:
        i = self.pos
        self.obs[i], self.actions[i], self.rewards[i] = obs, actions, rewards
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.pos = (i + 1) % self.size
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.size if self.full else self.pos, batch_size)
        arrays = (self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx])
        return tuple(torch.from_numpy(a).to(self.device, non_blocking=True) for a in arrays)


class Agent(nn.Module):
    """Every agent's actor and critic: what a checkpoint holds."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: tuple[int, ...], act_mask: torch.Tensor) -> None:
        super().__init__()
        self.actors = Actors(n, obs_dim, act_dim, hidden, act_mask)
        self.critics = Critics(n, obs_dim, act_dim, hidden)


def make_agent(args: Args, env: gym.Env) -> nn.Module:
    n, obs_dim = env.observation_space.shape
    act_dim = env.action_space.shape[1]
    act_mask = torch.zeros(n, act_dim)  # 1 where an agent's action has that dimension
    for i, d in enumerate(env.unwrapped.act_dims):
        act_mask[i, :d] = 1.0
    return Agent(n, obs_dim, act_dim, args.hidden_sizes, act_mask)  # [MADDPG 1] actors and critics


def act(agent: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The noise-free actors, for evaluation: a_i = mu_i(o_i) for every agent."""
    return agent.actors(obs.unsqueeze(0))[0]


# ----------------------------------------------------------------------------- training
def train(args: Args, agent: nn.Module, run: Run) -> None:
    env, device, rng = make_env(args), run.device, np.random.default_rng(args.seed)
    actors, critics = agent.actors, agent.critics
    (n, obs_dim), act_dim = env.observation_space.shape, env.action_space.shape[1]
    # [MADDPG 1] target copies of every actor and critic, one joint buffer
    actors_target = Actors(n, obs_dim, act_dim, args.hidden_sizes, actors.act_mask.squeeze(1).cpu()).to(device)
    critics_target = Critics(n, obs_dim, act_dim, args.hidden_sizes).to(device)
    actors_target.load_state_dict(actors.state_dict())
    critics_target.load_state_dict(critics.state_dict())
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    actor_opt = torch.optim.Adam(actors.parameters(), lr=args.learning_rate, fused=True)
    critic_opt = torch.optim.Adam(critics.parameters(), lr=args.learning_rate, fused=True)
    rb = ReplayBuffer(args.buffer_size, n, obs_dim, act_dim, device)
    mask_np = actors.act_mask.squeeze(1).cpu().numpy()

    obs, _ = env.reset(seed=args.seed)
    ep_return, ep_len = np.zeros(n), 0
    for global_step in range(1, args.total_timesteps + 1):
        # [MADDPG 2] every agent acts on its own observation, plus noise, inside [0, 1]
        if global_step <= args.learning_starts:
            acts = rng.random((n, act_dim), dtype=np.float32)
        else:
            with torch.inference_mode():
                acts = actors(torch.as_tensor(obs, device=device).unsqueeze(0))[0].cpu().numpy()
            acts = acts + rng.normal(0.0, args.exploration_noise, acts.shape).astype(np.float32)
        acts = np.clip(acts, 0.0, 1.0) * mask_np
        # [MADDPG 3] apply the joint action, store the joint transition
        next_obs, rewards, terminated, truncated, info = env.step(acts)
        rb.add(obs, acts, rewards, next_obs, info["terminated"])
        ep_return, ep_len = ep_return + rewards, ep_len + 1
        obs = next_obs
        if terminated or truncated:  # the episode is over for everyone (MPE: truncation after max_cycles)
            run.log_episode(global_step, ep_return.mean(), ep_len)
            run.writer.add_scalar("charts/team_return", ep_return.sum(), global_step)
            for name, ret in zip(env.unwrapped.agent_names, ep_return, strict=True):
                run.writer.add_scalar(f"charts/agent_return/{name}", ret, global_step)
            obs, _ = env.reset()
            ep_return, ep_len = np.zeros(n), 0

        if global_step > args.learning_starts and global_step % args.train_frequency == 0:
            # [MADDPG 4] a minibatch of joint transitions
            b_obs, b_act, b_rew, b_next_obs, b_term = rb.sample(args.batch_size, rng)
            # [MADDPG 5] targets from the target actors (all agents' next actions) and target critics
            with torch.no_grad():
                x_next = critic_input(b_next_obs, actors_target(b_next_obs)).expand(n, -1, -1)
                y = critic_target(b_rew.T, critics_target(x_next), b_term.T, args.gamma)
            # [MADDPG 6] every critic regresses on its own target
            q = critics(critic_input(b_obs, b_act).expand(n, -1, -1))
            critic_loss = F.mse_loss(q, y) * n  # sum over agents of the per-agent mean
            critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_opt.step()
            # [MADDPG 7] every actor climbs its own critic, its action swapped in for the buffer's
            swapped = own_action_swapped(b_act, actors(b_obs))  # (n, B, n, act)
            x_pi = critic_input(b_obs.expand(n, -1, -1, -1), swapped)
            actor_loss = -critics(x_pi).mean() * n
            actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()  # also leaves gradients on the critics: cleared before their next step
            actor_opt.step()
            # [MADDPG 8] soft updates
            soft_update(critics_target, critics, args.tau)
            soft_update(actors_target, actors, args.tau)
            if global_step % 100 < args.train_frequency:  # log now and then: .item() syncs
                run.writer.add_scalar("losses/critic_loss", critic_loss.item() / n, global_step)
                run.writer.add_scalar("losses/actor_loss", actor_loss.item() / n, global_step)
                run.writer.add_scalar("losses/q_values", q.mean().item(), global_step)
        if run.tick(global_step):
            break
    env.close()


# ----------------------------------------------------------------------------- the env
class JointEnv(gym.Env):
    """A PettingZoo parallel MPE env as one gymnasium env: observations (agents, obs_dim) and actions
    (agents, act_dim) zero-padded to the largest agent, one reward per agent, and the episode over
    when every agent is done (in MPE: truncation after --max-cycles steps)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, env, args: Args, render_mode: str | None) -> None:  # noqa: ANN001
        self.env, self.render_mode = env, render_mode
        self.agent_names = list(env.possible_agents)
        self.obs_dims = [env.observation_space(a).shape[0] for a in self.agent_names]
        self.act_dims = [env.action_space(a).shape[0] for a in self.agent_names]
        n, obs_dim, act_dim = len(self.agent_names), max(self.obs_dims), max(self.act_dims)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n, obs_dim), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (n, act_dim), np.float32)
        # the time limit, where the run block looks
        self.spec = gym.envs.registration.EnvSpec(args.env_id, max_episode_steps=args.max_cycles)

    def pack(self, d: dict) -> np.ndarray:
        out = np.zeros(self.observation_space.shape, dtype=np.float32)
        for i, a in enumerate(self.agent_names):
            out[i, : self.obs_dims[i]] = d[a]
        return out

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, _ = self.env.reset(seed=seed)
        return self.pack(obs), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool, dict]:
        named = enumerate(zip(self.agent_names, self.act_dims, strict=True))
        obs, rew, term, _, _ = self.env.step({a: actions[i, :d] for i, (a, d) in named})
        rewards = np.array([rew[a] for a in self.agent_names], dtype=np.float32)
        terminated = np.array([term[a] for a in self.agent_names], dtype=np.float32)
        over, all_terminal = not self.env.agents, bool(terminated.all())
        info = {"terminated": terminated}  # per agent, for the replay buffer
        return self.pack(obs), rewards, over and all_terminal, over and not all_terminal, info

    def render(self) -> np.ndarray:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def mpe(module, **kwargs):  # noqa: ANN001, ANN201
    """A maker of one MPE env: kwargs name the args passed to it."""

    def make(args: Args, render_mode: str | None) -> JointEnv:
        extra = {k: getattr(args, v) for k, v in kwargs.items()}
        env = module.parallel_env(max_cycles=args.max_cycles, continuous_actions=True, render_mode=render_mode, **extra)
        return JointEnv(env, args, render_mode)

    return make


# ----------------------------------------------------------------------------- what the run block reads
# What this file takes: the run block below checks envs and args against these before anything runs.
ACTION_SPACES = (gym.spaces.Box,)
RANK = 2  # (agents, features) observations and actions
ENV_MAKERS = {
    "simple_spread_v3": mpe(simple_spread_v3, local_ratio="local_ratio"),
    "simple_adversary_v3": mpe(simple_adversary_v3),
    "simple_speaker_listener_v4": mpe(simple_speaker_listener_v4),
    "simple_tag_v3": mpe(simple_tag_v3),
}
OTHERWISE = ""
POSITIVE = ("max_cycles", "learning_rate", "buffer_size", "tau", "batch_size", "train_frequency", "hidden_sizes")
NON_NEGATIVE = ("learning_starts", "exploration_noise")
FRACTIONS = ("gamma", "tau", "local_ratio")
RULES = {"--batch-size must be no larger than --buffer-size": lambda a: a.batch_size <= a.buffer_size}
WARNINGS = {"--learning-starts >= --total-timesteps: the networks never update":
            lambda a: a.learning_starts >= a.total_timesteps}
ARCHITECTURE = ("hidden_sizes", "max_cycles", "local_ratio")  # taken from the checkpoint with --load-model
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
