"""Deep Q-Network (DQN): Q-learning with a neural network, a replay buffer and a target network.

The network Q(s, a; theta) regresses on one-step TD targets computed with a frozen copy
theta-bar (the target network) from minibatches drawn out of a replay buffer, which breaks
the correlation between consecutive samples. Follows slides/000 ("DQN Pseudo Code",
steps 1-18) and the DQN recipe in slides/001 ("Deep Q-Learning Algorithm"):

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
    python algos/dqn.py --env-id Acrobot-v1 --total-timesteps 200000 --cuda
    python algos/dqn.py --loss huber --save-model
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
class Args:
    env_id: str = "CartPole-v1"
    """gymnasium id of an env with vector observations and Discrete actions"""
    seed: int = 1
    """seed of torch, numpy, the env and the exploration"""
    total_timesteps: int = 100_000
    """training budget, in env steps"""
    learning_rate: float = 1e-3
    """Adam step size at the start"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over the budget (keeps the final policy from drifting)"""
    buffer_size: int = 100_000
    """replay buffer capacity, in transitions"""
    gamma: float = 0.995
    """discount factor; 0.995 (horizon ~200 steps) lets Q see CartPole's slow cart drift, which 0.99 left unfixed"""
    tau: float = 1.0
    """target update rate: 1.0 copies theta into theta-bar, < 1 blends (soft update)"""
    target_network_frequency: int = 250
    """env steps between target network updates (step 18)"""
    batch_size: int = 128
    """minibatch size B (step 11)"""
    start_e: float = 1.0
    """epsilon at the start"""
    end_e: float = 0.02
    """epsilon after the decay"""
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
    eval_frequency: int = 10_000
    """env steps between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 10
    """greedy evaluation episodes (after training and at each periodic evaluation)"""
    target_return: float | None = None
    """return that counts as solved, for the steps-to-threshold record (default: the env's)"""
    cuda: bool = False
    """use the GPU if there is one"""
    torch_deterministic: bool = True
    """ask torch for deterministic kernels"""
    num_threads: int = 1
    """torch CPU threads; 1 measured fastest for these small networks"""
    log_dir: str = "runs"
    """root folder of the run directories"""
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """experiment name, part of the run directory"""
    save_model: bool = False
    """save the networks and args to {run_dir}/{exp_name}.pt"""


SCRIPT = os.path.basename(__file__)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


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


# ----------------------------------------------------------------------------- networks, buffer
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


# ----------------------------------------------------------------------------- set-up
def make_env(env_id: str) -> gym.Env:
    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        raise UsageError(f"unknown env id {env_id!r} ({e}). Try CartPole-v1, Acrobot-v1 or MountainCar-v0.") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise UsageError(
            f"{SCRIPT} needs a Discrete action space; {env_id} has {env.action_space}. Use ddpg.py or ppo.py."
        )
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env.close()
        raise UsageError(
            f"{SCRIPT} needs flat Box (vector) observations; {env_id} has {env.observation_space}. "
            "Use tabular_q.py for Discrete observations."
        )
    return env


def check_args(args: Args) -> None:
    positive = (
        "total_timesteps",
        "learning_rate",
        "buffer_size",
        "batch_size",
        "train_frequency",
        "target_network_frequency",
        "eval_episodes",
        "num_threads",
    )
    for name in positive:
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    if args.batch_size > args.buffer_size:
        raise UsageError(
            f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}; "
            "use a batch no larger than the buffer."
        )
    if not 0.0 < args.tau <= 1.0 or not 0.0 <= args.gamma <= 1.0:
        raise UsageError(f"--tau must lie in (0, 1] and --gamma in [0, 1]; got {args.tau} and {args.gamma}.")
    if min(args.hidden_sizes, default=1) <= 0 or min(args.learning_starts, args.eval_frequency, args.max_grad_norm) < 0:
        raise UsageError("--hidden-sizes must be positive; --learning-starts, --eval-frequency, --max-grad-norm >= 0.")


def new_run_dir(args: Args) -> str:
    stamp = int(time.time())
    while True:  # never reuse a directory: bump the stamp until the name is free
        path = os.path.join(args.log_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__{stamp}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            stamp += 1


@torch.inference_mode()
def evaluate(q_net: QNetwork, args: Args, device: torch.device) -> list[float]:
    """Greedy policy on a fresh env; episode i is seeded apart from training."""
    env = make_env(args.env_id)
    returns = []
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 * (i + 1))
        done, total = False, 0.0
        while not done:
            action = int(q_net(torch.as_tensor(obs, dtype=torch.float32, device=device)).argmax())
            obs, r, terminated, truncated, _ = env.step(action)
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


@contextmanager
def ctrl_c_stops() -> Iterator[list[bool]]:
    """Inside the block Ctrl-C only appends to the yielded list, which the loop checks once per pass. A
    KeyboardInterrupt raised mid-call instead can cut TensorBoard's writer queue between an enqueue and its
    notify, and writer.close() then waits out the 120 s flush timer. A second Ctrl-C raises as usual."""
    pressed: list[bool] = []

    def on_sigint(signum: int, frame: object) -> None:
        pressed.append(True)
        if len(pressed) > 1:
            raise KeyboardInterrupt

    # only the main thread may set handlers; a SIGINT that arrives ignored (a background job) stays ignored
    install = (
        threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    )
    previous = signal.signal(signal.SIGINT, on_sigint) if install else None
    try:
        yield pressed
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- main
def main(args: Args) -> dict:
    check_args(args)
    env = make_env(args.env_id)
    if args.cuda and not torch.cuda.is_available():
        print(f"{SCRIPT}: warning: --cuda given but CUDA is not available; running on CPU", file=sys.stderr)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.num_threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    rng = np.random.default_rng(args.seed)
    target_return = (
        args.target_return if args.target_return is not None else (env.spec.reward_threshold if env.spec else None)
    )
    run_dir = new_run_dir(args)
    writer = SummaryWriter(run_dir)
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    )

    obs_dim, n_actions = env.observation_space.shape[0], int(env.action_space.n)
    q_net = QNetwork(obs_dim, n_actions, args.hidden_sizes).to(device)  # [DQN 1] random theta
    target_net = QNetwork(obs_dim, n_actions, args.hidden_sizes).to(device)
    target_net.load_state_dict(q_net.state_dict())  # [DQN 2] theta-bar = theta
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate, fused=True)
    rb = ReplayBuffer(args.buffer_size, obs_dim, device)  # [DQN 3] empty D
    weights = host_weights(q_net)

    def episode_start(o: np.ndarray) -> float:
        """max_a Q(s^0, a): the value the network promises from the episode's first state."""
        with torch.inference_mode():
            return float(q_net(torch.as_tensor(o, dtype=torch.float32, device=device)).max())

    obs, _ = env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    q_start, disc_return, discount = episode_start(obs), 0.0, 1.0
    ep_return, ep_len, recent = 0.0, 0, []
    solved_step = solved_seconds = None
    eval_seconds, global_step = 0.0, 0
    start = last_print = time.perf_counter()
    with ctrl_c_stops() as stop:
        for global_step in range(1, args.total_timesteps + 1):  # [DQN 4-5] episodes and steps, flattened
            # [DQN 6-8] observe s^t; epsilon-greedy action (the network runs only when it is needed)
            epsilon = linear_schedule(
                args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps, global_step
            )
            action = int(rng.integers(n_actions)) if rng.random() < epsilon else greedy_action(weights, obs)
            # [DQN 9] apply a^t, observe r^t and s^{t+1}
            next_obs, reward, terminated, truncated, _ = env.step(action)
            # [DQN 10] store the transition; s^{t+1} is the true last state even when truncated
            rb.add(obs, action, float(reward), next_obs, terminated)
            ep_return += float(reward)
            disc_return += discount * float(reward)
            discount *= args.gamma
            ep_len += 1
            obs = next_obs
            if terminated or truncated:
                writer.add_scalar("charts/episodic_return", ep_return, global_step)
                writer.add_scalar("charts/episodic_length", ep_len, global_step)
                writer.add_scalar("charts/q_overestimation", q_start - disc_return, global_step)
                writer.add_scalar("charts/epsilon", epsilon, global_step)
                recent = (recent + [ep_return])[-20:]
                obs, _ = env.reset()
                q_start, disc_return, discount, ep_return, ep_len = episode_start(obs), 0.0, 1.0, 0.0, 0

            if global_step > args.learning_starts and global_step % args.train_frequency == 0:
                if args.anneal_lr:
                    optimizer.param_groups[0]["lr"] = args.learning_rate * (
                        1.0 - (global_step - 1) / args.total_timesteps
                    )
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
                    writer.add_scalar("losses/td_loss", loss.item(), global_step)
                    writer.add_scalar("losses/q_values", q_sa.mean().item(), global_step)
            # [DQN 18] in a set interval, update theta-bar
            if global_step > args.learning_starts and global_step % args.target_network_frequency == 0:
                soft_update(target_net, q_net, args.tau)

            if args.eval_frequency and global_step % args.eval_frequency == 0 and global_step < args.total_timesteps:
                t0 = time.perf_counter()
                mean_eval = float(np.mean(evaluate(q_net, args, device)))
                eval_seconds += time.perf_counter() - t0
                writer.add_scalar("eval/episodic_return", mean_eval, global_step)
                if solved_step is None and target_return is not None and mean_eval >= target_return:
                    solved_step, solved_seconds = global_step, time.perf_counter() - start - eval_seconds
            now = time.perf_counter()
            if now - last_print > 2.0 or global_step == args.total_timesteps:
                sps = global_step / (now - start - eval_seconds)
                writer.add_scalar("charts/SPS", int(sps), global_step)
                print(
                    f"step {global_step}/{args.total_timesteps} ({100 * global_step / args.total_timesteps:.0f}%) "
                    f"return(20) {np.mean(recent) if recent else float('nan'):.1f} SPS {sps:.0f} "
                    f"ETA {(args.total_timesteps - global_step) / sps:.0f}s",
                    flush=True,
                )
                last_print = now
            if stop:  # Ctrl-C: leave here, where no step is half done
                break
    interrupted = bool(stop)
    train_seconds = time.perf_counter() - start - eval_seconds
    env.close()
    sps = global_step / max(train_seconds, 1e-9)
    writer.add_scalar("charts/SPS", int(sps), global_step)

    eval_returns = [] if interrupted else evaluate(q_net, args, device)
    if eval_returns:
        writer.add_scalar("eval/episodic_return", float(np.mean(eval_returns)), global_step)
        if solved_step is None and target_return is not None and np.mean(eval_returns) >= target_return:
            solved_step, solved_seconds = global_step, train_seconds
    if args.save_model:
        torch.save(
            {"q_network": q_net.state_dict(), "target_network": target_net.state_dict(), "args": asdict(args)},
            os.path.join(run_dir, f"{args.exp_name}.pt"),
        )
    writer.close()
    return {
        "algo": SCRIPT[:-3],
        "env_id": args.env_id,
        "seed": args.seed,
        "total_timesteps": global_step,
        "eval_return_mean": float(np.mean(eval_returns)) if eval_returns else None,
        "eval_return_std": float(np.std(eval_returns)) if eval_returns else None,
        "train_seconds": round(train_seconds, 3),
        "sps": round(sps, 1),
        "run_dir": run_dir,
        "interrupted": interrupted,
        "target_return": target_return,
        "solved_step": solved_step,
        "solved_seconds": None if solved_seconds is None else round(solved_seconds, 3),
    }


if __name__ == "__main__":
    try:
        summary = main(tyro.cli(Args))
    except UsageError as err:
        print(f"{SCRIPT}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside the loop, or a second one: nothing is saved
        sys.exit(130)
    print(json.dumps(summary), flush=True)
    sys.exit(130 if summary["interrupted"] else 0)
