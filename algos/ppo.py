"""Proximal Policy Optimization (PPO), clipped surrogate, actor-critic style with GAE.

N synchronous envs each run the current policy for T steps; generalized advantage estimates
are computed from a learned V; then K epochs of minibatch updates minimise the clipped
surrogate, which stops the new policy moving far from the one that collected the data.
Follows slides/000 ("PPO Surrogate Objective", "PPO Pseudocode") and slides/003 (PPO
"actor-critic style" with N actors, T steps, K epochs, minibatch M; GAE). Steps, in the
numbering of slides/000 "Simplified PPO" (the slides' per-step loop runs here per rollout):

    1. Initialise the actor pi(a|s; phi).        2. Initialise the critic V(s; theta).
    3-4. Repeat: for T steps in each of the N envs:
    5.   Observe s^t.   6. Sample a^t ~ pi(.|s^t; phi).   7. Apply a^t; observe r^t, s^{t+1}.
    8.   Remember pi_beta(a^t|s^t) = pi(a^t|s^t; phi), the behaviour policy's probability
         (here for the whole rollout in one batched pass after it: phi does not change during it).
    11-16. Advantages and critic targets: the slides' one-step TD error
         r^t + gamma V(s^{t+1}) - V(s^t) (just r^t - V(s^t) if s^{t+1} is terminal),
         averaged over n-step horizons by GAE(lambda) (slides/003); target y^t = Adv + V(s^t).
    9.   For epoch e = 1..K, for each minibatch of M samples:
    10.    rho = pi(a^t|s^t; phi) / pi_beta(a^t|s^t).
    17.    Actor loss -min(rho Adv, clip(rho, 1 - eps, 1 + eps) Adv) (minus an entropy bonus).
    18.    Critic loss (y^t - V(s^t; theta))^2.
    19-20. Update phi and theta by one gradient step on the summed loss.

Discrete actions use a softmax (Categorical) policy; Box actions a Gaussian with a learned,
state-independent log-std, clipped to the bounds in the env. A time-limit truncation is not
terminal: its advantage bootstraps from V(final observation).

Examples:
    python algos/ppo.py --env-id CartPole-v1 --cuda
    python algos/ppo.py --env-id Pendulum-v1 --total-timesteps 300000 --gamma 0.9 --gae-lambda 0.95 \
        --num-steps 256 --num-minibatches 8 --update-epochs 10 --learning-rate 1e-3
    python algos/ppo.py --num-envs 4 --num-steps 128 --update-epochs 4 --num-minibatches 4 --learning-rate 2.5e-4
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
    """seed of torch, numpy and the envs"""
    total_timesteps: int = 100_000
    """training budget, in env steps summed over the envs"""
    learning_rate: float = 1e-3
    """Adam step size at the start"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over the budget"""
    num_envs: int = 8
    """N: synchronous envs collecting each rollout"""
    num_steps: int = 32
    """T: steps per env per rollout"""
    gamma: float = 0.98
    """discount factor"""
    gae_lambda: float = 0.8
    """GAE lambda: 0 is the one-step TD error, 1 the Monte-Carlo advantage"""
    num_minibatches: int = 1
    """minibatches per epoch (M = N * T / num_minibatches samples each)"""
    update_epochs: int = 20
    """K: epochs over each rollout"""
    norm_adv: bool = True
    """normalise the advantages within each minibatch"""
    clip_coef: float = 0.2
    """epsilon of the clipped surrogate"""
    ent_coef: float = 0.0
    """weight of the entropy bonus"""
    vf_coef: float = 0.5
    """weight of the critic loss"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    target_kl: float | None = None
    """stop the epochs early once the approximate KL exceeds this (None: never)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """widths of the hidden tanh layers of the actor and of the critic (separate networks)"""
    eval_frequency: int = 10_000
    """env steps between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 10
    """greedy (mean-action) evaluation episodes"""
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
    """Actor pi(a|s; phi) and critic V(s; theta) as two separate networks."""

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.discrete = discrete
        self.actor = mlp([obs_dim, *hidden, act_dim], 0.01)  # logits, or the Gaussian mean
        self.critic = mlp([obs_dim, *hidden, 1], 1.0)
        self.log_std = nn.Parameter(torch.zeros(act_dim), requires_grad=not discrete)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


# ----------------------------------------------------------------------------- set-up
def make_env(env_id: str) -> gym.Env:
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
    return env


def check_args(args: Args) -> None:
    positive = (
        "total_timesteps",
        "learning_rate",
        "num_envs",
        "num_steps",
        "num_minibatches",
        "update_epochs",
        "clip_coef",
        "max_grad_norm",
        "eval_episodes",
        "num_threads",
    )
    for name in positive:
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    if (args.num_envs * args.num_steps) % args.num_minibatches:
        raise UsageError(
            f"--num-envs x --num-steps ({args.num_envs * args.num_steps}) must split evenly into "
            f"--num-minibatches ({args.num_minibatches}) minibatches."
        )
    if not 0.0 <= args.gamma <= 1.0 or not 0.0 <= args.gae_lambda <= 1.0:
        raise UsageError(f"--gamma and --gae-lambda must lie in [0, 1]; got {args.gamma} and {args.gae_lambda}.")
    if min(args.hidden_sizes, default=1) <= 0 or min(args.ent_coef, args.vf_coef, args.eval_frequency) < 0:
        raise UsageError("--hidden-sizes must be positive; --ent-coef, --vf-coef, --eval-frequency >= 0.")


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
def evaluate(agent: Agent, args: Args, device: torch.device) -> list[float]:
    """Greedy (argmax / mean) actions on a fresh env; episode i is seeded apart from training."""
    env = make_env(args.env_id)
    returns = []
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 * (i + 1))
        done, total = False, 0.0
        while not done:
            action = agent.greedy(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            if agent.discrete:
                action = int(action)
            else:
                action = np.clip(action, env.action_space.low, env.action_space.high)
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
    probe = make_env(args.env_id)
    discrete = isinstance(probe.action_space, gym.spaces.Discrete)
    obs_dim = probe.observation_space.shape[0]
    act_dim = int(probe.action_space.n) if discrete else probe.action_space.shape[0]
    target_return = (
        args.target_return if args.target_return is not None else getattr(probe.spec, "reward_threshold", None)
    )
    probe.close()
    if args.cuda and not torch.cuda.is_available():
        print(f"{SCRIPT}: warning: --cuda given but CUDA is not available; running on CPU", file=sys.stderr)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.num_threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    rng = np.random.default_rng(args.seed)

    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make(args.env_id) for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,  # step() returns the final obs in info
    )
    if not discrete:
        low, high = envs.single_action_space.low, envs.single_action_space.high
    run_dir = new_run_dir(args)
    writer = SummaryWriter(run_dir)
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    )

    agent = Agent(obs_dim, act_dim, discrete, args.hidden_sizes).to(device)  # [PPO 1-2] actor phi, critic theta
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    params = list(agent.parameters())
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=1e-5, fused=True)

    T, N = args.num_steps, args.num_envs
    batch_size = T * N
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = max(1, args.total_timesteps // batch_size)
    # rollout storage, preallocated host arrays: a step writes numpy, the update moves one batch to the device
    obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    act_buf = np.zeros((T, N) if discrete else (T, N, act_dim), dtype=np.float32)
    rew_buf, done_buf = np.zeros((T, N), dtype=np.float32), np.zeros((T, N), dtype=np.float32)

    def to_device(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=device)

    obs_np, _ = envs.reset(seed=args.seed)
    ep_ret, ep_len = np.zeros(N), np.zeros(N, dtype=np.int64)
    recent: list[float] = []
    global_step, eval_seconds = 0, 0.0
    solved_step = solved_seconds = None
    next_eval = args.eval_frequency or None
    start = last_print = time.perf_counter()
    with ctrl_c_stops() as stop:
        for iteration in range(num_iterations):  # [PPO 3] repeat
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - iteration / num_iterations)
            # the policy stays fixed during the rollout: act on a host copy of its weights (a view on the CPU)
            actor_w = [p.detach().cpu().numpy() for p in agent.actor.parameters()]
            log_std = None if discrete else agent.log_std.detach().cpu().numpy()
            fix_t, fix_env, fix_obs = [], [], []  # truncated steps whose V(final obs) we still need
            for t in range(T):  # [PPO 4] T steps in each of the N envs
                obs_buf[t] = obs_np  # [PPO 5] observe s^t
                a_np = sample_action(mlp_numpy(actor_w, obs_buf[t]), log_std, rng)  # [PPO 6] a^t ~ pi(.|s^t)
                act_buf[t] = a_np
                # [PPO 7] apply a^t, observe r^t and s^{t+1}
                obs_np, reward, terminated, truncated, info = envs.step(a_np if discrete else np.clip(a_np, low, high))
                global_step += N
                done = terminated | truncated
                rew_buf[t], done_buf[t] = reward, done
                ep_ret += reward
                ep_len += 1
                for i in np.flatnonzero(done):
                    writer.add_scalar("charts/episodic_return", ep_ret[i], global_step)
                    writer.add_scalar("charts/episodic_length", ep_len[i], global_step)
                    recent = (recent + [float(ep_ret[i])])[-20:]
                    ep_ret[i], ep_len[i] = 0.0, 0
                    if truncated[i] and not terminated[i]:
                        fix_t.append(t)
                        fix_env.append(i)
                        fix_obs.append(info["final_obs"][i])

            b_obs, b_act = to_device(obs_buf).reshape(batch_size, obs_dim), to_device(act_buf).flatten(0, 1)
            with torch.no_grad():
                # [PPO 8] pi_beta(a^t|s^t) and V(s^t) for the whole rollout in one batched pass: the
                # policy did not change while the rollout ran, and one pass costs less than T small ones
                b_logp, _, b_val = agent.evaluate(b_obs, b_act)
                last_value = agent.value(to_device(obs_np)).cpu().numpy()
                final_values = agent.value(to_device(np.stack(fix_obs))).cpu().numpy() if fix_t else None
            # [PPO 11-16] advantages and critic targets; V(s^{t+1}) is the next stored value,
            # V(final obs) after a truncation and 0 after a termination
            val_np = b_val.cpu().numpy().reshape(T, N)
            next_values = np.concatenate([val_np[1:], last_value[None]]) * (1.0 - done_buf)
            if fix_t:
                next_values[fix_t, fix_env] = final_values
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
                    new_logp, entropy, new_val = agent.evaluate(e_obs[mb], e_act[mb])
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
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy.mean().item(), global_step)
            writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
            clipfrac = ((torch.cat(ratios) - 1.0).abs() > args.clip_coef).float().mean()
            writer.add_scalar("losses/clipfrac", clipfrac.item(), global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)

            if next_eval is not None and global_step >= next_eval and iteration < num_iterations - 1:
                next_eval += args.eval_frequency
                t0 = time.perf_counter()
                mean_eval = float(np.mean(evaluate(agent, args, device)))
                eval_seconds += time.perf_counter() - t0
                writer.add_scalar("eval/episodic_return", mean_eval, global_step)
                if solved_step is None and target_return is not None and mean_eval >= target_return:
                    solved_step, solved_seconds = global_step, time.perf_counter() - start - eval_seconds
            now = time.perf_counter()
            if now - last_print > 2.0 or iteration == num_iterations - 1:
                sps = global_step / (now - start - eval_seconds)
                writer.add_scalar("charts/SPS", int(sps), global_step)
                print(
                    f"step {global_step}/{num_iterations * batch_size} "
                    f"({100 * (iteration + 1) / num_iterations:.0f}%) "
                    f"return(20) {np.mean(recent) if recent else float('nan'):.1f} SPS {sps:.0f} "
                    f"ETA {(num_iterations * batch_size - global_step) / sps:.0f}s",
                    flush=True,
                )
                last_print = now
            if stop:  # Ctrl-C: leave here, where no step is half done
                break
    interrupted = bool(stop)
    train_seconds = time.perf_counter() - start - eval_seconds
    envs.close()
    sps = global_step / max(train_seconds, 1e-9)
    writer.add_scalar("charts/SPS", int(sps), global_step)

    eval_returns = [] if interrupted else evaluate(agent, args, device)
    if eval_returns:
        writer.add_scalar("eval/episodic_return", float(np.mean(eval_returns)), global_step)
        if solved_step is None and target_return is not None and np.mean(eval_returns) >= target_return:
            solved_step, solved_seconds = global_step, train_seconds
    if args.save_model:
        torch.save({"agent": agent.state_dict(), "args": asdict(args)}, os.path.join(run_dir, f"{args.exp_name}.pt"))
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
