"""REINFORCE: Monte-Carlo policy gradient, with a learned state-value baseline.

Play whole episodes with the stochastic policy, compute each step's discounted return-to-go
G_t, and push up log pi(a_t|s_t) in proportion to G_t (minus a baseline V(s_t), which cuts
the variance without biasing the gradient). Follows slides/000 ("REINFORCE Pseudocode",
steps 1-8, and "Baseline to Reduce Variance"):

    1. Initialise the policy network pi with random parameters phi
       (and, with the baseline, the value network V with parameters theta).
    2. For every episode (here: a batch of --episodes-per-update episodes):
    3.   For t = 0 .. T-1:
    4.     Observe s^t.
    5.     Sample a^t ~ pi(.|s^t; phi).
    6.     Apply a^t; observe r^t and s^{t+1}.
    7.   Loss L(phi) = -1/T sum_t (G_t - V(s^t; theta)) log pi(a^t|s^t; phi), with the
         return-to-go G_t = sum_{tau >= t} gamma^(tau - t) r^tau; the baseline's loss is
         L(theta) = 1/T sum_t (G_t - V(s^t; theta))^2.
    8.   Update phi (and theta) by minimising the losses.

Discrete actions use a softmax (Categorical) policy; Box actions a Gaussian with a learned,
state-independent log-std, clipped to the bounds in the env. A time-limit truncation is not
terminal: with the baseline on, G_t bootstraps from V(final observation); without it there
is no critic to bootstrap from and the episode's return is cut at the limit.

Examples:
    python algos/reinforce.py                          # CartPole-v1, 300k steps, baseline on
    python algos/reinforce.py --no-baseline            # the plain slide version
    python algos/reinforce.py --env-id Acrobot-v1 --cuda
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    env_id: str = "CartPole-v1"
    """gymnasium id of an env with vector observations and Discrete or Box actions"""
    seed: int = 1
    """seed of torch, numpy and the env"""
    total_timesteps: int = 300_000
    """training budget, in env steps"""
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
    """clip the gradient norm to this"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """widths of the hidden tanh layers of the policy and of the baseline"""
    max_episode_steps: int = 1000
    """time limit applied only to envs that have none"""
    eval_frequency: int = 30_000
    """env steps between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 10
    """greedy (argmax / mean-action) evaluation episodes"""
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


class Policy(nn.Module):
    """pi(a|s; phi): Categorical over logits, or Gaussian with a learned log-std."""

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.discrete = discrete
        self.net = mlp([obs_dim, *hidden, act_dim], 0.01)
        self.log_std = nn.Parameter(torch.zeros(act_dim), requires_grad=not discrete)

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


# ----------------------------------------------------------------------------- set-up
def make_env(env_id: str, max_episode_steps: int) -> gym.Env:
    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        raise UsageError(f"unknown env id {env_id!r} ({e}). Try CartPole-v1 or Pendulum-v1.") from None
    act = env.action_space
    if not isinstance(act, gym.spaces.Discrete) and not (isinstance(act, gym.spaces.Box) and len(act.shape) == 1):
        env.close()
        raise UsageError(f"{SCRIPT} needs a Discrete or a 1-D Box action space; {env_id} has {act}.")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env.close()
        raise UsageError(
            f"{SCRIPT} needs flat Box (vector) observations; {env_id} has {env.observation_space}. "
            "Use tabular_q.py for Discrete observations."
        )
    if env.spec is None or env.spec.max_episode_steps is None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps)
    return env


def check_args(args: Args) -> None:
    positive = (
        "total_timesteps",
        "learning_rate",
        "episodes_per_update",
        "max_grad_norm",
        "max_episode_steps",
        "eval_episodes",
        "num_threads",
    )
    for name in positive:
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    if not 0.0 <= args.gamma <= 1.0:
        raise UsageError(f"--gamma must lie in [0, 1], got {args.gamma}.")
    if min(args.hidden_sizes, default=1) <= 0 or args.eval_frequency < 0:
        raise UsageError("--hidden-sizes must be positive and --eval-frequency >= 0.")


def new_run_dir(args: Args) -> str:
    stamp = int(time.time())
    while True:  # never reuse a directory: bump the stamp until the name is free
        path = os.path.join(args.log_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__{stamp}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            stamp += 1


def to_env_action(action: torch.Tensor, space: gym.Space) -> int | np.ndarray:
    a = action.cpu().numpy()
    return int(a) if isinstance(space, gym.spaces.Discrete) else np.clip(a, space.low, space.high)


@torch.inference_mode()
def evaluate(policy: Policy, args: Args, device: torch.device) -> list[float]:
    """Greedy (argmax / mean) actions on a fresh env; episode i is seeded apart from training."""
    env = make_env(args.env_id, args.max_episode_steps)
    returns = []
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 * (i + 1))
        done, total = False, 0.0
        while not done:
            action = policy.greedy(torch.as_tensor(obs, dtype=torch.float32, device=device))
            obs, r, terminated, truncated, _ = env.step(to_env_action(action, env.action_space))
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
    env = make_env(args.env_id, args.max_episode_steps)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    obs_dim = env.observation_space.shape[0]
    act_dim = int(env.action_space.n) if discrete else env.action_space.shape[0]
    target_return = (
        args.target_return if args.target_return is not None else getattr(env.spec, "reward_threshold", None)
    )
    if args.cuda and not torch.cuda.is_available():
        print(f"{SCRIPT}: warning: --cuda given but CUDA is not available; running on CPU", file=sys.stderr)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.num_threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    run_dir = new_run_dir(args)
    writer = SummaryWriter(run_dir)
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    )

    # [REINFORCE 1] policy phi and baseline theta
    policy = Policy(obs_dim, act_dim, discrete, args.hidden_sizes).to(device)
    critic = mlp([obs_dim, *args.hidden_sizes, 1], 1.0).to(device)
    params = list(policy.parameters()) + (list(critic.parameters()) if args.baseline else [])
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, fused=True)

    # storage for one batch of whole episodes, preallocated: it can never hold more steps than this
    cap = args.episodes_per_update * env.spec.max_episode_steps
    obs_buf = np.zeros((cap, obs_dim), dtype=np.float32)
    act_buf = np.zeros((cap,) if discrete else (cap, act_dim), dtype=np.int64 if discrete else np.float32)
    ret_buf = np.zeros(cap, dtype=np.float32)

    obs, _ = env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    recent: list[float] = []
    global_step, updates, eval_seconds = 0, 0, 0.0
    solved_step = solved_seconds = None
    next_eval = args.eval_frequency or None
    start = last_print = time.perf_counter()
    with ctrl_c_stops() as stop:
        while global_step < args.total_timesteps:
            n = 0
            for _episode in range(args.episodes_per_update):  # [REINFORCE 2] a batch of episodes
                ep_start, rewards, done = n, [], False
                while not done:  # [REINFORCE 3] t = 0 .. T-1
                    obs_buf[n] = obs  # [REINFORCE 4] observe s^t
                    with torch.inference_mode():  # [REINFORCE 5] a^t ~ pi(.|s^t; phi)
                        action = policy.sample(torch.as_tensor(obs, dtype=torch.float32, device=device))
                    act_buf[n] = action.cpu().numpy()
                    # [REINFORCE 6] apply a^t, observe r^t and s^{t+1}
                    obs, reward, terminated, truncated, _ = env.step(to_env_action(action, env.action_space))
                    rewards.append(float(reward))
                    n += 1
                    global_step += 1
                    truncated = truncated or global_step >= args.total_timesteps  # the budget cuts too
                    done = terminated or truncated
                bootstrap = 0.0  # a truncated episode continues past the limit: estimate the rest with V
                if truncated and not terminated and args.baseline:
                    with torch.inference_mode():
                        bootstrap = float(critic(torch.as_tensor(obs, dtype=torch.float32, device=device)))
                ret_buf[ep_start:n] = returns_to_go(np.array(rewards), args.gamma, bootstrap)
                writer.add_scalar("charts/episodic_return", sum(rewards), global_step)
                writer.add_scalar("charts/episodic_length", len(rewards), global_step)
                recent = (recent + [sum(rewards)])[-20:]
                obs, _ = env.reset()
                if global_step >= args.total_timesteps:
                    break

            # [REINFORCE 7] losses over the batch: -1/T sum (G_t - V(s^t)) log pi(a^t|s^t), and (G_t - V(s^t))^2
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * max(
                    0.0, 1.0 - global_step / args.total_timesteps
                )
            b_obs = torch.as_tensor(obs_buf[:n], device=device)
            b_act = torch.as_tensor(act_buf[:n], device=device)
            b_ret = torch.as_tensor(ret_buf[:n], device=device)
            logp = policy.log_prob(b_obs, b_act)
            if args.baseline:
                values = critic(b_obs).squeeze(-1)
                baseline_loss = (b_ret - values).pow(2).mean()
                weights = b_ret - values.detach()
            else:
                baseline_loss, weights = torch.zeros((), device=device), b_ret
            if args.norm_adv and n > 1:
                weights = (weights - weights.mean()) / (weights.std() + 1e-8)
            policy_loss = reinforce_loss(logp, weights)
            # [REINFORCE 8] update phi (and theta)
            optimizer.zero_grad(set_to_none=True)
            (policy_loss + 0.5 * baseline_loss).backward()
            nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
            optimizer.step()
            updates += 1
            writer.add_scalar("losses/policy_loss", policy_loss.item(), global_step)
            writer.add_scalar("losses/baseline_loss", baseline_loss.item(), global_step)

            if next_eval is not None and global_step >= next_eval and global_step < args.total_timesteps:
                next_eval += args.eval_frequency
                t0 = time.perf_counter()
                mean_eval = float(np.mean(evaluate(policy, args, device)))
                eval_seconds += time.perf_counter() - t0
                writer.add_scalar("eval/episodic_return", mean_eval, global_step)
                if solved_step is None and target_return is not None and mean_eval >= target_return:
                    solved_step, solved_seconds = global_step, time.perf_counter() - start - eval_seconds
            now = time.perf_counter()
            if now - last_print > 2.0 or global_step >= args.total_timesteps:
                sps = global_step / (now - start - eval_seconds)
                writer.add_scalar("charts/SPS", int(sps), global_step)
                print(
                    f"step {global_step}/{args.total_timesteps} ({100 * global_step / args.total_timesteps:.0f}%) "
                    f"return(20) {np.mean(recent):.1f} SPS {sps:.0f} "
                    f"ETA {max(args.total_timesteps - global_step, 0) / sps:.0f}s",
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

    eval_returns = [] if interrupted else evaluate(policy, args, device)
    if eval_returns:
        writer.add_scalar("eval/episodic_return", float(np.mean(eval_returns)), global_step)
        if solved_step is None and target_return is not None and np.mean(eval_returns) >= target_return:
            solved_step, solved_seconds = global_step, train_seconds
    if args.save_model:
        torch.save(
            {"policy": policy.state_dict(), "baseline": critic.state_dict(), "args": asdict(args)},
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
