"""Tabular Q-learning (Sarsamax) and SARSA with an epsilon-greedy behaviour policy.

Both keep a table Q[s, a] and nudge one entry per step towards a one-step TD target:
Q-learning (off-policy) bootstraps on the best next action, SARSA (on-policy) on the
next action it will actually take. Follows the MLMU "Reinforcement Learning" talk (parts I-III),
slides "Temporal Difference Methods - SARSA" and "Q-Learning Algorithm Pseudocode". Numbering
below is ours, in slide order:

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
    python algos/tabular_q.py --env-id Blackjack-v1 --total-episodes 100000 --eval-episodes 50000
    python algos/tabular_q.py --env-id CliffWalking-v1 --algo sarsa --total-episodes 1000 \
        --start-e 0.1 --end-e 0.1 --learning-rate 0.5 --end-learning-rate 0.01 --gamma 1.0
    python algos/tabular_q.py --save-model, then --load-model runs/<run>/tabular_q.npz --eval-only --capture-video
"""

from __future__ import annotations

import json
import os
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
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class AlgoArgs:
    algo: Literal["q-learning", "sarsa"] = "q-learning"
    """TD control rule: off-policy Q-learning (Sarsamax) or on-policy SARSA"""
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
    # the run: this file's env and budget, in episodes (the knobs every file shares follow in Args, in the run block)
    env_id: str = "FrozenLake-v1"
    """gymnasium id of an env with Discrete observations (or a tuple of them, as Blackjack-v1) and actions"""
    total_episodes: int = 20_000
    """training budget, in episodes"""
    eval_frequency: int = 2_000
    """episodes between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 10
    """greedy evaluation episodes (after training and at each periodic evaluation)"""


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


def make_agent(args: Args, env: gym.Env) -> np.ndarray:
    """[TD 1] Q(s, a) = 0 everywhere; terminal rows are never updated, so they stay 0."""
    return np.zeros((env.observation_space.n, env.action_space.n), dtype=np.float64)


def act(q: np.ndarray, s: int) -> int:
    """Step 8, the greedy policy, for evaluation."""
    return int(q[s].argmax())


# ----------------------------------------------------------------------------- training
def train(args: Args, q: np.ndarray, run: Run) -> None:
    env, rng, sarsa = make_env(args), np.random.default_rng(args.seed), args.algo == "sarsa"
    env.action_space.seed(args.seed)
    global_step = 0
    for episode in range(args.total_episodes):
        # [TD 2] epsilon_i and alpha_i for this episode; observe S_0
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_episodes, episode)
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
            ep_return, ep_len, global_step = ep_return + float(r), ep_len + 1, global_step + 1
            done = terminated or truncated
        run.log_episode(global_step, ep_return, ep_len)
        run.writer.add_scalar("losses/td_error", abs_td / ep_len, global_step)
        run.writer.add_scalar("charts/epsilon", epsilon, global_step)
        if run.tick(episode + 1, global_step):
            break
    env.close()


# ----------------------------------------------------------------------------- what the run block reads
# The run block below checks the args against these before anything runs.
POSITIVE = ("learning_rate", "end_learning_rate")
NON_NEGATIVE: tuple[str, ...] = ()
FRACTIONS = ("gamma", "start_e", "end_e", "exploration_fraction")


# ====================================================================== run block: the same in every deep file
# The run block of the deep files, with the same names in the same order (a test compares them), without torch
# and counting episodes: checks, run directory, TensorBoard, progress, evaluation, video, checkpoints, Ctrl-C.
SCRIPT = os.path.basename(__file__)


@dataclass
class Args(AlgoArgs):
    # the knobs above, then the run's own, as in every file (tyro lists them in this order)
    seed: int = 1
    """seed of the env, the exploration and the evaluation"""
    max_episode_steps: int = 500
    """time limit for envs that have none (e.g. CliffWalking-v1)"""
    torch_deterministic: bool = True
    """accepted for a uniform CLI; numpy runs are always deterministic"""
    log_dir: str = "runs"
    """root folder of the run directories"""
    exp_name: str = SCRIPT[: -len(".py")]
    """experiment name, part of the run directory"""
    save_model: bool = False
    """save the Q-table and args to {run_dir}/{exp_name}.npz (also on Ctrl-C)"""
    load_model: str | None = None
    """start from this Q-table of --save-model"""
    eval_only: bool = False
    """with --load-model: only evaluate the loaded Q-table, no training"""
    capture_video: bool = False
    """film the final evaluation episodes to {run_dir}/videos/*.mp4"""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def warn(message: str) -> None:
    print(f"{SCRIPT}: warning: {message}", file=sys.stderr, flush=True)


def make_env(args: Args, render_mode: str | None = None) -> gym.Env:
    """The env by id, checked against what this file takes, with a time limit if it has none."""
    try:
        env = gym.make(args.env_id, render_mode=render_mode)
    except (gym.error.DependencyNotInstalled, ImportError) as e:  # a registered env whose extra is missing
        raise UsageError(f"{args.env_id} needs a package that is not installed: {e}") from None
    except gym.error.Error as e:
        raise UsageError(f"unknown env id {args.env_id!r} ({e}). Try FrozenLake-v1 or CliffWalking-v1.") from None
    obs = env.observation_space
    if isinstance(obs, gym.spaces.Tuple) and all(isinstance(part, gym.spaces.Discrete) for part in obs):
        # a tuple of Discretes (Blackjack-v1: the hand, the dealer's card, a usable ace) is one Discrete: number them
        sizes, starts = [int(part.n) for part in obs], [int(part.start) for part in obs]
        index = lambda o: int(np.ravel_multi_index(np.subtract(o, starts), sizes))
        env = gym.wrappers.TransformObservation(env, index, gym.spaces.Discrete(int(np.prod(sizes))))
    if not all(isinstance(space, gym.spaces.Discrete) for space in (env.observation_space, env.action_space)):
        env.close()
        short = lambda space: f"Box{space.shape}" if isinstance(space, gym.spaces.Box) else str(space)  # one line
        raise UsageError(
            f"{SCRIPT} needs Discrete observation (or a tuple of them) and action spaces; {args.env_id} has "
            f"observations {short(env.observation_space)} and actions {short(env.action_space)}. "
            "Use dqn.py (Discrete actions) or ppo.py / ddpg.py (continuous)."
        )
    if env.spec is None or env.spec.max_episode_steps is None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=args.max_episode_steps)
    return env


def check_args(args: Args) -> None:
    """The rules above (POSITIVE, NON_NEGATIVE, FRACTIONS) and the run's own."""
    positive = (*POSITIVE, "total_episodes", "eval_episodes", "max_episode_steps")
    for name in (*positive, *NON_NEGATIVE, *FRACTIONS, "eval_frequency"):
        value = getattr(args, name)
        if name in FRACTIONS and not 0.0 <= value <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must lie in [0, 1], got {value}.")
        if not (0 < value < float("inf") if name in positive else 0 <= value < float("inf")):  # nan fails too
            need = "positive" if name in positive else ">= 0"
            raise UsageError(f"--{name.replace('_', '-')} must be {need} and finite, got {value}.")
    if args.eval_only and not args.load_model:
        raise UsageError("--eval-only needs --load-model PATH.")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must lie in [0, 2**32 - 1] (numpy's range), got {args.seed}.")


class Run:
    """What the training loop reports to: run directory and TensorBoard, the clock (less evaluation time),
    progress lines every 2 s, periodic evaluations and the Ctrl-C flag."""

    def __init__(self, args: Args, agent: np.ndarray) -> None:
        self.args, self.agent, stamp = args, agent, int(time.time())
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
        self.final_episode, self.episode, self.step, self.stop = args.total_episodes, 0, 0, False
        self.next_eval = args.eval_frequency
        self.recent, self.evals, self.eval_seconds = deque(maxlen=100), [], 0.0  # evals: [step, s, mean, std]
        self.start = self.last_print = time.perf_counter()
        print(f"{SCRIPT} {args.algo} {args.env_id} seed {args.seed}: {name}", f"(tensorboard --logdir {args.log_dir})")

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
        print(f"eval at step {step:,}: {mean:.3f} ± {std:.3f} over {len(returns)} episodes", flush=True)

    def tick(self, episode: int, step: int) -> bool:
        """The end of episode `episode`, at env step `step`: evaluate when due, print progress every 2 s.
        True once Ctrl-C was pressed: the loop then breaks, where no step is half done."""
        self.episode, self.step = episode, step
        if self.next_eval and self.final_episode > episode >= self.next_eval:
            self.next_eval += self.args.eval_frequency
            t0 = time.perf_counter()
            returns = evaluate(self.agent, self.args)
            self.eval_seconds += time.perf_counter() - t0
            self.record_eval(step, self.seconds(), returns)
        if (now := time.perf_counter()) - self.last_print > 2.0 or episode >= self.final_episode:
            sps, self.last_print, done = step / max(self.seconds(), 1e-9), now, episode / self.final_episode
            self.writer.add_scalar("charts/SPS", int(sps), step)
            print(f"episode {episode:,}/{self.final_episode:,} ({100 * done:.0f}%) step {step:,}  return "
                  f"{np.mean(self.recent):.3f} (mean of last {len(self.recent)} episodes)  SPS {sps:,.0f}  "
                  f"ETA {self.seconds() * (1 - done) / done:.0f}s", flush=True)
        return self.stop


def evaluate(agent: np.ndarray, args: Args, video_dir: str | None = None) -> list[float]:
    """`act` above for --eval-episodes episodes on a fresh env, episode i seeded apart from training with
    seed + 10,000 (i + 1); with video_dir, every episode is filmed there as mp4."""
    env = make_env(args, render_mode="rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda i: True, name_prefix="eval")
    returns = []
    for i in range(args.eval_episodes):
        s, _ = env.reset(seed=args.seed + 10_000 * (i + 1))
        done, total = False, 0.0
        while not done:
            s, reward, terminated, truncated, _ = env.step(act(agent, s))
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
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
    """A Q-table of --save-model (.npz)."""
    try:
        ckpt = dict(np.load(args.load_model))
    except OSError as e:  # missing, a folder, unreadable
        raise UsageError(f"cannot read --load-model {args.load_model}: {e.strerror or e}.") from None
    except Exception:  # noqa: BLE001 (a file of another kind: numpy's message would not say so)
        ckpt = {}
    if str(ckpt.get("algo")) != SCRIPT:
        raise UsageError(f"--load-model {args.load_model} was not written by {SCRIPT} --save-model.")
    saved = json.loads(str(ckpt["args"]))
    if saved["env_id"] != args.env_id:
        raise UsageError(f"--load-model {args.load_model} was trained on {saved['env_id']}: "
                         f"add --env-id {saved['env_id']}.")
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
    check_args(args)
    if args.capture_video:  # one frame now, not a crash after the training
        check_video(args)
    env = make_env(args)  # checks the spaces before anything is written
    ckpt = load_checkpoint(args) if args.load_model else None
    q = make_agent(args, env)
    env.close()
    if ckpt is not None:
        if ckpt["q"].shape != q.shape:
            raise UsageError(f"--load-model {args.load_model} holds a {ckpt['q'].shape} table, not {q.shape}.")
        q[:] = ckpt["q"]
    run = Run(args, q)

    def on_ctrl_c(signum: int, frame: object) -> None:  # the first press stops the loop, a second aborts
        if run.stop:
            raise KeyboardInterrupt
        run.stop = True

    # only the main thread may set handlers; a SIGINT that arrives ignored (a background job) stays ignored
    catch = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN
    previous = signal.signal(signal.SIGINT, on_ctrl_c) if catch else None
    try:
        if not args.eval_only:
            train(args, q, run)
    finally:
        if catch:
            signal.signal(signal.SIGINT, previous)
    train_seconds = run.seconds() if not args.eval_only else 0.0
    sps = run.step / max(train_seconds, 1e-9)
    run.writer.add_scalar("charts/SPS", int(sps), run.step)
    # saved before the final evaluation: a failure while filming loses no training
    checkpoint = os.path.join(run.dir, f"{args.exp_name}.npz") if args.save_model else None
    if checkpoint:
        np.savez(checkpoint, q=q, args=json.dumps(asdict(args)), algo=SCRIPT)
    video_dir = os.path.join(run.dir, "videos") if args.capture_video and not run.stop else None
    returns = [] if run.stop else evaluate(q, args, video_dir)
    if returns:
        run.record_eval(run.step, train_seconds, returns)
    run.writer.close()
    mean, std = (float(np.mean(returns)), float(np.std(returns))) if returns else (None, None)
    words = [f"greedy eval {mean:.3f} ± {std:.3f} over {len(returns)} episodes" if returns else "interrupted: no eval"]
    words += [f"checkpoint at {checkpoint}"] * bool(checkpoint) + [f"videos in {video_dir}"] * bool(video_dir)
    print(f"{SCRIPT}: " + "; ".join(words), flush=True)
    return {"algo": f"tabular_q/{args.algo}", "env_id": args.env_id, "seed": args.seed, "total_timesteps": run.step,
            "total_episodes": run.episode, "eval_return_mean": mean, "eval_return_std": std,
            "train_seconds": round(train_seconds, 3), "sps": round(sps, 1), "run_dir": run.dir,
            "interrupted": run.stop, "evals": run.evals, "checkpoint": checkpoint}


if __name__ == "__main__":
    try:
        summary = main(tyro.cli(Args))
    except UsageError as err:
        print(f"{SCRIPT}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except (MemoryError, ValueError) as err:
        reason = too_large(err)  # a Q-table larger than any machine (states x actions): one line
        if reason is None:
            raise  # anything else is a bug, shown in full
        print(f"{SCRIPT}: error: too large to allocate: {reason}; use an env with fewer states.", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the loop: stop now, nothing saved
        os._exit(130)  # at once: no shutdown handlers that a late Ctrl-C could interrupt again
    print(json.dumps(summary), flush=True)
    sys.exit(130 if summary["interrupted"] else 0)
