"""Deep Q-Network (DQN): Q-learning with a neural network, a replay buffer and a target network.

The network Q(s, a; theta) regresses on one-step TD targets computed with a frozen copy theta-bar
(the target network), on minibatches drawn from a replay buffer, which breaks the correlation
between consecutive samples. Follows the MARL book's "Deep Reinforcement Learning" lecture
(Albrecht, Christianos, Schäfer; slides by L. Hinckeldey), slide "DQN Pseudo Code", steps 1-18,
with the DQN recipe of the MLMU "Reinforcement Learning" talk ("Deep Q-Learning Algorithm"):

    1. Initialise the value network Q with random parameters theta.
    2. Initialise the target network with theta-bar = theta.
    3. Initialise an empty replay buffer D.
    4-5. For every episode and every time step t:
    6.   Observe the current state s^t.
    7.   With probability epsilon pick a random action,
    8.   otherwise a^t = argmax_a Q(s^t, a; theta).
    9.   Apply a^t; observe r^t and s^{t+1}.
    10.  Store (s^t, a^t, r^t, s^{t+1}, terminated) in D.
    11.  Sample a random minibatch of B transitions from D.
    12-13. If s^{k+1} is terminal, the target is y^k = r^k,
    14-15. else y^k = r^k + gamma * max_a' Q(s^{k+1}, a'; theta-bar).
    16.  Loss = 1/B sum_k (y^k - Q(s^k, a^k; theta))^2.
    17.  Update theta by minimising the loss (Adam).
    18.  Every so often, copy theta into theta-bar.

A time-limit truncation is not terminal: the target bootstraps from the true last state.

Examples:
    python algos/dqn.py                                  # CartPole-v1, 100k steps
    python algos/dqn.py --env-id Acrobot-v1 --total-timesteps 100000 --cuda
    python algos/dqn.py --env-id LunarLander-v3 --total-timesteps 300000  # gymnasium[box2d]
    python algos/dqn.py --save-model, then --load-model runs/<run>/dqn.pt --eval-only --capture-video
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
    learning_rate: float = 1e-3
    """Adam step size at the start"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over the budget (keeps the final policy from drifting)"""
    buffer_size: int = 100_000
    """replay buffer capacity, in transitions"""
    gamma: float = 0.99
    """discount factor (horizon ~100 steps); at 0.995 Q overestimated on LunarLander-v3 and failed it"""
    tau: float = 1.0
    """target update rate: 1.0 copies theta into theta-bar, < 1 blends (soft update)"""
    target_network_frequency: int = 250
    """env steps between target network updates (step 18)"""
    batch_size: int = 256
    """minibatch size B (step 11); at gamma 0.99, 128 left CartPole-v1 seed 1 at 304.5 and 256 at 500"""
    start_e: float = 1.0
    """epsilon at the start"""
    end_e: float = 0.1
    """epsilon after the decay (rl-zoo's LunarLander value; on CartPole-v1 seeds 1-30 it ends 3 below 475, 0.05 4)"""
    exploration_fraction: float = 0.1
    """fraction of the budget over which epsilon decays linearly"""
    learning_starts: int = 1_000
    """env steps of pure exploration before the first update"""
    train_frequency: int = 2
    """env steps between gradient steps"""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """widths of the Q-network's hidden ReLU layers"""
    loss: Literal["mse", "huber"] = "mse"
    """TD loss: MSE as on the slides, or Huber, which caps the gradient of large TD errors"""
    max_grad_norm: float = 0.0
    """clip the gradient norm to this if > 0 (off by default: it costs a third of an update on CPU)"""
    # the run: this file's env and budget (the knobs every file shares follow in Args, in the run block)
    env_id: str = "CartPole-v1"
    """gymnasium id of an env with vector observations and Discrete actions"""
    total_timesteps: int = 100_000
    """training budget, in env steps"""
    eval_frequency: int = 10_000
    """env steps between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 10
    """greedy evaluation episodes (after training and at each periodic evaluation)"""


# ----------------------------------------------------------------------------- math
def linear_schedule(start: float, end: float, duration: float, t: float) -> float:
    """Value that goes linearly from `start` (t=0) to `end` (t>=duration), then stays."""
    if duration <= 0:
        return end
    return start + (end - start) * min(t / duration, 1.0)


def td_target(rewards: torch.Tensor, next_q: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """Steps 12-15: y = r if s' is terminal, else r + gamma * max_a' Q(s', a'; theta-bar).
    `next_q` holds Q(s', . ; theta-bar) with shape (B, |A|); truncated s' are not terminal."""
    return rewards + gamma * (1.0 - terminated) * next_q.max(dim=1).values


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Step 18: theta-bar <- tau * theta + (1 - tau) * theta-bar (tau = 1 is a hard copy)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=False):
            t.lerp_(s, tau)


def q_overestimation(q_start: float, disc_return: float, discount: float, q_last: float, terminated: bool) -> float:
    """max_a Q(s^0, a) minus what the episode delivered from s^0: sum_t gamma^t r^t, plus, when a time
    limit cut it (not a terminal state), gamma^T max_a Q(s^T, a), which the TD target bootstraps on too."""
    return q_start - disc_return - (0.0 if terminated else discount * q_last)


def greedy_action(weights: list[np.ndarray], obs: np.ndarray) -> int:
    """Step 8, argmax_a Q(s, a; theta) for one state, in numpy on the network's weights: for a single
    state PyTorch's per-call overhead (~50 us here) is several times the math itself (~10 us)."""
    h = np.asarray(obs, dtype=np.float32)
    for w, b in zip(weights[0:-2:2], weights[1:-2:2], strict=True):
        h = np.maximum(w @ h + b, 0.0)  # Linear + ReLU, as in QNetwork
    return int(np.argmax(weights[-2] @ h + weights[-1]))


def host_weights(net: nn.Module) -> list[np.ndarray]:
    """Weights and biases as numpy arrays; on the CPU these are views that follow every update."""
    return [p.detach().cpu().numpy() for p in net.parameters()]


# ----------------------------------------------------------------------------- network, buffer
class QNetwork(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers, width = [], obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class ReplayBuffer:
    """Ring buffer of preallocated arrays; sampling moves one batch to the device at once."""

    def __init__(self, size: int, obs_dim: int, device: torch.device) -> None:
        self.obs = np.zeros((size, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((size, obs_dim), dtype=np.float32)
        self.actions = np.zeros(size, dtype=np.int64)
        self.rewards = np.zeros(size, dtype=np.float32)
        self.terminated = np.zeros(size, dtype=np.float32)
        self.size, self.pos, self.full, self.device = size, 0, False, device

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        i = self.pos
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.pos = (i + 1) % self.size
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.size if self.full else self.pos, batch_size)
        arrays = (self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx])
        return tuple(torch.from_numpy(a).to(self.device, non_blocking=True) for a in arrays)


def make_agent(args: Args, env: gym.Env) -> nn.Module:
    return QNetwork(env.observation_space.shape[0], int(env.action_space.n), args.hidden_sizes)  # [DQN 1] theta


def act(q_net: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The greedy policy, for evaluation: argmax_a Q(s, a; theta)."""
    return q_net(obs).argmax(-1)


# ----------------------------------------------------------------------------- training
def train(args: Args, q_net: nn.Module, run: Run) -> None:
    env, device, rng = make_env(args), run.device, np.random.default_rng(args.seed)
    target_net = QNetwork(env.observation_space.shape[0], int(env.action_space.n), args.hidden_sizes).to(device)
    target_net.load_state_dict(q_net.state_dict())  # [DQN 2] theta-bar = theta
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate, fused=True)
    rb = ReplayBuffer(args.buffer_size, env.observation_space.shape[0], device)  # [DQN 3] empty D
    weights = host_weights(q_net)

    def max_q(o: np.ndarray) -> float:
        with torch.inference_mode():
            return float(q_net(torch.as_tensor(o, dtype=torch.float32, device=device)).max())

    decay_steps = args.exploration_fraction * args.total_timesteps
    obs, _ = env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    q_start, disc_return, discount, ep_return, ep_len = max_q(obs), 0.0, 1.0, 0.0, 0
    for global_step in range(1, args.total_timesteps + 1):  # [DQN 4-5] episodes and steps, flattened
        # [DQN 6-8] observe s^t; epsilon-greedy action (the network runs only when it is needed)
        epsilon = linear_schedule(args.start_e, args.end_e, decay_steps, global_step)
        action = int(rng.integers(env.action_space.n)) if rng.random() < epsilon else greedy_action(weights, obs)
        # [DQN 9] apply a^t, observe r^t and s^{t+1}
        next_obs, reward, terminated, truncated, _ = env.step(action)
        # [DQN 10] store the transition; s^{t+1} is the true last state even when truncated
        rb.add(obs, action, float(reward), next_obs, terminated)
        ep_return, ep_len = ep_return + float(reward), ep_len + 1
        disc_return, discount = disc_return + discount * float(reward), discount * args.gamma
        obs = next_obs
        if terminated or truncated:
            run.log_episode(global_step, ep_return, ep_len)
            bias = q_overestimation(q_start, disc_return, discount, 0.0 if terminated else max_q(obs), terminated)
            run.writer.add_scalar("charts/q_overestimation", bias, global_step)
            run.writer.add_scalar("charts/epsilon", epsilon, global_step)
            obs, _ = env.reset()
            q_start, disc_return, discount, ep_return, ep_len = max_q(obs), 0.0, 1.0, 0.0, 0

        if global_step > args.learning_starts and global_step % args.train_frequency == 0:
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (global_step - 1) / args.total_timesteps)
            # [DQN 11] random minibatch of B transitions
            b_obs, b_actions, b_rewards, b_next_obs, b_terminated = rb.sample(args.batch_size, rng)
            # [DQN 12-15] TD targets from the target network
            with torch.no_grad():
                y = td_target(b_rewards, target_net(b_next_obs), b_terminated, args.gamma)
            q_sa = q_net(b_obs).gather(1, b_actions.unsqueeze(1)).squeeze(1)
            # [DQN 16] loss over the minibatch
            loss = F.mse_loss(q_sa, y) if args.loss == "mse" else F.smooth_l1_loss(q_sa, y)
            # [DQN 17] one Adam step on theta
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(q_net.parameters(), args.max_grad_norm, foreach=True)
            optimizer.step()
            weights = host_weights(q_net)  # the acting copy (free on the CPU: the same memory)
            if global_step % 100 < args.train_frequency:  # log now and then: .item() syncs with the device
                run.writer.add_scalar("losses/td_loss", loss.item(), global_step)
                run.writer.add_scalar("losses/q_values", q_sa.mean().item(), global_step)
        # [DQN 18] in a set interval, update theta-bar
        if global_step > args.learning_starts and global_step % args.target_network_frequency == 0:
            soft_update(target_net, q_net, args.tau)
        if run.tick(global_step):
            break
    env.close()


# ----------------------------------------------------------------------------- what the run block reads
# What this file takes: the run block below checks envs and args against these before anything runs.
ACTION_SPACES = (gym.spaces.Discrete,)
RANK = 1  # flat vector observations (and Box actions)
ENV_MAKERS: dict = {}  # none of its own: env ids go to gym.make
OTHERWISE = "Use ddpg.py or ppo.py for Box actions."
POSITIVE = ("learning_rate", "buffer_size", "tau", "batch_size", "train_frequency", "target_network_frequency",
            "hidden_sizes")
NON_NEGATIVE = ("learning_starts", "max_grad_norm")
FRACTIONS = ("gamma", "tau", "start_e", "end_e", "exploration_fraction")
RULES = {"--batch-size must be no larger than --buffer-size": lambda a: a.batch_size <= a.buffer_size}
WARNINGS = {"--learning-starts >= --total-timesteps: the networks never update":
            lambda a: a.learning_starts >= a.total_timesteps}
ARCHITECTURE = ("hidden_sizes",)  # taken from the checkpoint with --load-model
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
