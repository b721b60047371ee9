"""Tabular Q-learning (Sarsamax) and SARSA with an epsilon-greedy behaviour policy.

Both keep a table Q[s, a] and nudge one entry per step towards a one-step TD target:
Q-learning (off-policy) bootstraps on the best next action, SARSA (on-policy) on the
next action it will actually take. Follows slides/001 ("Temporal Difference Methods -
SARSA" and "Q-Learning Algorithm Pseudocode"). Numbering below is ours, in slide order:

    1. Initialise Q(s, a) = 0 for every state and action (terminal states stay 0).
    2. For every episode i: set epsilon_i from the decay schedule; observe S_0.
    3.   Choose A_t epsilon-greedily from Q (SARSA chooses A_0 before the loop).
    4.   Take A_t, observe R_{t+1} and S_{t+1}.
    5.   SARSA: choose A_{t+1} epsilon-greedily now; the target uses Q(S_{t+1}, A_{t+1}).
         Q-learning: the target uses max_a Q(S_{t+1}, a).
    6.   Q(S_t, A_t) += alpha * (target - Q(S_t, A_t)); the target is R_{t+1} alone
         when S_{t+1} is terminal (a time-limit truncation still bootstraps).
    7.   t += 1 until S_t is terminal (or the episode is truncated).
    8. Return Q; act greedily with it at evaluation.

Examples:
    python algos/tabular_q.py                                   # FrozenLake-v1 4x4 slippery
    python algos/tabular_q.py --env-id CliffWalking-v1 --total-episodes 500
    python algos/tabular_q.py --env-id CliffWalking-v1 --algo sarsa --total-episodes 1000 \
        --start-e 0.1 --end-e 0.1 --learning-rate 0.5 --end-learning-rate 0.01 --gamma 1.0
"""

from __future__ import annotations

import json
import os
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
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    env_id: str = "FrozenLake-v1"
    """gymnasium id of an env with Discrete observations and actions"""
    algo: Literal["q-learning", "sarsa"] = "q-learning"
    """TD control rule: off-policy Q-learning (Sarsamax) or on-policy SARSA"""
    seed: int = 1
    """seed of the env, the exploration and the evaluation"""
    total_episodes: int = 20_000
    """training budget, in episodes"""
    learning_rate: float = 0.1
    """step size alpha at the start of training"""
    end_learning_rate: float = 0.005
    """alpha decays linearly to this by the last episode (small steps average out slip noise)"""
    gamma: float = 0.995
    """discount factor"""
    start_e: float = 1.0
    """epsilon at the first episode"""
    end_e: float = 0.05
    """epsilon after the decay"""
    exploration_fraction: float = 0.5
    """fraction of the episodes over which epsilon decays linearly"""
    max_episode_steps: int = 500
    """time limit applied only to envs that have none (e.g. CliffWalking-v1)"""
    eval_episodes: int = 10
    """greedy evaluation episodes (after training and at each periodic evaluation)"""
    eval_frequency: int = 2_000
    """episodes between periodic greedy evaluations (0: only at the end)"""
    target_return: float | None = None
    """return that counts as solved, for the episodes-to-threshold record (default: the env's)"""
    log_dir: str = "runs"
    """root folder of the run directories"""
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """experiment name, part of the run directory"""
    torch_deterministic: bool = True
    """accepted for a uniform CLI; numpy runs are always deterministic"""
    save_model: bool = False
    """save the Q-table to {run_dir}/{exp_name}.npz"""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- math
def linear_schedule(start: float, end: float, duration: float, t: float) -> float:
    """Value that goes linearly from `start` (t=0) to `end` (t>=duration), then stays."""
    if duration <= 0:
        return end
    return start + (end - start) * min(t / duration, 1.0)


def td_target(q: np.ndarray, r: float, s_next: int, a_next: int, terminated: bool, gamma: float, algo: str) -> float:
    """Step 5: R + gamma * Q(S', A') for SARSA, R + gamma * max_a Q(S', a) for Q-learning;
    just R when S' is terminal."""
    if terminated:
        return r
    bootstrap = q[s_next, a_next] if algo == "sarsa" else q[s_next].max()
    return r + gamma * float(bootstrap)


def td_update(q: np.ndarray, s: int, a: int, target: float, alpha: float) -> float:
    """Step 6: move Q(s, a) a fraction alpha towards the target; returns the TD error."""
    delta = target - q[s, a]
    q[s, a] += alpha * delta
    return float(delta)


def epsilon_greedy(q_row: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
    """Random action with probability epsilon, else a greedy one (ties broken at random,
    so an all-zero row does not always pick action 0)."""
    if rng.random() < epsilon:
        return int(rng.integers(len(q_row)))
    best = np.flatnonzero(q_row == q_row.max())
    return int(best[0] if len(best) == 1 else rng.choice(best))


# ----------------------------------------------------------------------------- set-up
def make_env(args: Args) -> gym.Env:
    try:
        env = gym.make(args.env_id)
    except gym.error.Error as e:
        raise UsageError(f"unknown env id {args.env_id!r} ({e}). Try FrozenLake-v1 or CliffWalking-v1.") from None
    if not isinstance(env.observation_space, gym.spaces.Discrete) or not isinstance(
        env.action_space, gym.spaces.Discrete
    ):
        env.close()
        raise UsageError(
            f"tabular_q.py needs Discrete observation and action spaces; {args.env_id} has "
            f"observations {env.observation_space} and actions {env.action_space}. "
            "Use dqn.py (Discrete actions) or ppo.py / ddpg.py (continuous)."
        )
    if env.spec is None or env.spec.max_episode_steps is None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=args.max_episode_steps)
    return env


def check_args(args: Args) -> None:
    for name in ("total_episodes", "learning_rate", "end_learning_rate", "eval_episodes", "max_episode_steps"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    if args.eval_frequency < 0:
        raise UsageError(f"--eval-frequency must be >= 0, got {args.eval_frequency}.")
    if not 0.0 <= args.gamma <= 1.0:
        raise UsageError(f"--gamma must lie in [0, 1], got {args.gamma}.")
    for name in ("start_e", "end_e", "exploration_fraction"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(args, name)}.")


def new_run_dir(args: Args) -> str:
    stamp = int(time.time())
    while True:  # never reuse a directory: bump the stamp until the name is free
        path = os.path.join(args.log_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__{stamp}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            stamp += 1


def evaluate(q: np.ndarray, args: Args) -> list[float]:
    """Step 8: greedy policy on fresh envs seeded apart from training."""
    env = make_env(args)
    returns = []
    for i in range(args.eval_episodes):
        s, _ = env.reset(seed=args.seed + 10_000 * (i + 1))
        done, total = False, 0.0
        while not done:
            s, r, terminated, truncated, _ = env.step(int(q[s].argmax()))
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
    env = make_env(args)
    run_dir = new_run_dir(args)
    writer = SummaryWriter(run_dir)
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    )
    rng = np.random.default_rng(args.seed)
    env.action_space.seed(args.seed)
    sarsa = args.algo == "sarsa"
    target_return = (
        args.target_return if args.target_return is not None else getattr(env.spec, "reward_threshold", None)
    )
    solved_step = solved_seconds = None
    eval_seconds = 0.0

    # [TD 1] Q(s, a) = 0 everywhere; terminal rows are never updated, so they stay 0
    q = np.zeros((env.observation_space.n, env.action_space.n), dtype=np.float64)

    global_step, recent = 0, []
    start = last_print = time.perf_counter()
    episode = 0
    with ctrl_c_stops() as stop:
        for episode in range(args.total_episodes):
            # [TD 2] epsilon_i and alpha_i for this episode; observe S_0
            frac_e = args.exploration_fraction * args.total_episodes
            epsilon = linear_schedule(args.start_e, args.end_e, frac_e, episode)
            alpha = linear_schedule(args.learning_rate, args.end_learning_rate, args.total_episodes, episode)
            s, _ = env.reset(seed=args.seed if episode == 0 else None)
            a = epsilon_greedy(q[s], epsilon, rng)  # [TD 3] (SARSA's A_0; Q-learning reuses it as A_t)
            ep_return, ep_len, abs_td, done = 0.0, 0, 0.0, False
            while not done:
                # [TD 4] take A_t, observe R_{t+1}, S_{t+1}
                s_next, r, terminated, truncated, _ = env.step(a)
                # [TD 5] SARSA picks A_{t+1} before updating; Q-learning picks it after (same draw count)
                a_next = epsilon_greedy(q[s_next], epsilon, rng) if sarsa else -1
                target = td_target(q, float(r), s_next, a_next, terminated, args.gamma, args.algo)
                # [TD 6] move Q(S_t, A_t) towards the target
                abs_td += abs(td_update(q, s, a, target, alpha))
                if not sarsa:
                    a_next = epsilon_greedy(q[s_next], epsilon, rng)  # [TD 3] next A_t from the updated Q
                # [TD 7] t <- t + 1 until terminal or truncated
                s, a = s_next, a_next
                ep_return += float(r)
                ep_len += 1
                global_step += 1
                done = terminated or truncated

            writer.add_scalar("charts/episodic_return", ep_return, global_step)
            writer.add_scalar("charts/episodic_length", ep_len, global_step)
            writer.add_scalar("losses/td_error", abs_td / ep_len, global_step)
            writer.add_scalar("charts/epsilon", epsilon, global_step)
            recent = (recent + [ep_return])[-100:]
            if args.eval_frequency and (episode + 1) % args.eval_frequency == 0 and episode + 1 < args.total_episodes:
                t0 = time.perf_counter()
                mean_eval = float(np.mean(evaluate(q, args)))
                eval_seconds += time.perf_counter() - t0
                writer.add_scalar("eval/episodic_return", mean_eval, global_step)
                if solved_step is None and target_return is not None and mean_eval >= target_return:
                    solved_step, solved_seconds = global_step, time.perf_counter() - start - eval_seconds
            now = time.perf_counter()
            if now - last_print > 2.0 or episode == args.total_episodes - 1:
                sps = int(global_step / (now - start - eval_seconds))
                writer.add_scalar("charts/SPS", sps, global_step)
                done_frac = (episode + 1) / args.total_episodes
                eta = (now - start - eval_seconds) * (1 - done_frac) / done_frac
                print(
                    f"episode {episode + 1}/{args.total_episodes} ({100 * done_frac:.0f}%) step {global_step} "
                    f"return(100) {np.mean(recent):.3f} SPS {sps} ETA {eta:.0f}s",
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

    eval_returns = [] if interrupted else evaluate(q, args)
    if eval_returns:
        writer.add_scalar("eval/episodic_return", float(np.mean(eval_returns)), global_step)
        if solved_step is None and target_return is not None and np.mean(eval_returns) >= target_return:
            solved_step, solved_seconds = global_step, train_seconds
    if args.save_model:
        np.savez(os.path.join(run_dir, f"{args.exp_name}.npz"), q=q, args=json.dumps(asdict(args)))
    writer.close()
    return {
        "algo": f"tabular_q/{args.algo}",
        "env_id": args.env_id,
        "seed": args.seed,
        "total_timesteps": global_step,
        "total_episodes": episode + 1,
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
        print(f"{os.path.basename(__file__)}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside the loop, or a second one: nothing is saved
        sys.exit(130)
    print(json.dumps(summary), flush=True)
    sys.exit(130 if summary["interrupted"] else 0)
