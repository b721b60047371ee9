"""Advantage Actor-Critic (A2C): synchronous parallel actors, N-step returns, one update per rollout.

N envs step in lock-step with the current policy for T steps; each step's return is
bootstrapped with the critic V after at most T steps (N-step returns), the advantage
G - V(s) weights the policy gradient, and the critic regresses on G. One gradient step per
rollout, on all N x T samples at once. Follows slides/000 ("A2C Pseudocode", "N-step
returns", synchronous concurrent training) and GAE from slides/003: by default the advantages
are GAE(0.95), an average of the 1..T-step advantages that measured steadier on CartPole than
the plain T-step return (--gae-lambda 1.0), which remains one flag away.
Steps in the numbering of slides/000 "A2C" (its per-step update runs here per rollout):

    1. Initialise the actor pi(a|s; phi).        2. Initialise the critic V(s; theta).
    3-4. Repeat: for T steps in each of the N envs:
    5.   Observe s^t.   6. Sample a^t ~ pi(.|s^t; phi).   7. Apply a^t; observe r^t, s^{t+1}.
    8-13. Critic targets and advantages. The slides' one-step form: y^t = r^t if s^{t+1} is
         terminal, else r^t + gamma V(s^{t+1}); Adv = y^t - V(s^t). Here y^t is the N-step
         return (rewards up to the end of the rollout, then gamma^n V); with GAE, Adv = GAE(lambda)
         and y^t = Adv + V(s^t).
    14.  Actor loss -Adv log pi(a^t|s^t; phi) (minus an entropy bonus).
    15.  Critic loss (y^t - V(s^t; theta))^2.
    16-17. Update phi and theta (one Adam step on the summed loss, gradient norm clipped).

Discrete actions use a softmax (Categorical) policy; Box actions a Gaussian with a learned,
state-independent log-std, clipped to the bounds in the env. A time-limit truncation is not
terminal: its return bootstraps from V(final observation).

Examples:
    python algos/a2c.py                               # CartPole-v1, 300k steps
    python algos/a2c.py --num-envs 16 --num-steps 5 --cuda  # the classic 5-step A2C
    python algos/a2c.py --gae-lambda 1.0              # plain N-step returns, exactly as on the slides
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
    total_timesteps: int = 300_000
    """training budget, in env steps summed over the envs"""
    learning_rate: float = 1e-3
    """Adam step size at the start"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over the budget"""
    num_envs: int = 8
    """N: synchronous envs collecting each rollout"""
    num_steps: int = 32
    """T: steps per env per rollout, the N of the N-step returns"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """< 1: GAE(lambda) advantages (steadier: 5/5 seeds vs 2/3 with 1.0); 1.0: plain N-step returns as on the slides"""
    norm_adv: bool = True
    """normalise the advantages within each rollout (scale-free policy steps)"""
    ent_coef: float = 0.01
    """weight of the entropy bonus"""
    vf_coef: float = 0.5
    """weight of the critic loss"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
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
def n_step_returns(rewards: np.ndarray, next_values: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """Steps 8-13, N-step form, over a rollout of shape (T, N): each step's return sums the
    discounted rewards to the end of its episode or of the rollout, then bootstraps with V.

    next_values[t] is V(s^{t+1}) for the state actually reached (the final observation when
    the episode was truncated) and 0 when s^{t+1} is terminal; dones[t] = 1 where the episode
    ended at step t.   G_t = r_t + gamma * (next_values_t if done_t or t = T-1 else G_{t+1})
    """
    returns = np.zeros_like(rewards)
    running = next_values[-1]
    for t in reversed(range(rewards.shape[0])):
        running = np.where(dones[t] > 0, next_values[t], running)
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """GAE(lambda) advantages over (T, N), same conventions as n_step_returns:
    delta_t = r_t + gamma V(s^{t+1}) - V(s^t);  A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}.
    lambda = 1 gives n_step_returns - V; lambda = 0 the one-step TD error of the slides."""
    advantages = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    deltas = rewards + gamma * next_values - values
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * (1.0 - dones[t]) * running
        advantages[t] = running
    return advantages


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
    """Actor pi(a|s; phi) and critic V(s; theta) as two separate networks."""

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.discrete = discrete
        self.actor = mlp([obs_dim, *hidden, act_dim], 0.01)  # logits, or the Gaussian mean
        self.critic = mlp([obs_dim, *hidden, 1], 1.0)
        self.log_std = nn.Parameter(torch.zeros(act_dim), requires_grad=not discrete)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 6: a sampled action and its log-probability under the current policy."""
        out = self.actor(obs)
        if self.discrete:
            logp_all = out.log_softmax(-1)
            # Gumbel-max: argmax(log pi - log E), E ~ Exp(1), is a draw from pi (cheaper than multinomial)
            action = (logp_all - torch.empty_like(out).exponential_().log()).argmax(-1)
            return action, logp_all.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        action = out + self.log_std.exp() * torch.randn_like(out)
        return action, gaussian_log_prob(action, out, self.log_std)

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(a|s), the policy's entropy and V(s) for a batch."""
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
        "max_grad_norm",
        "eval_episodes",
        "num_threads",
    )
    for name in positive:
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
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

    agent = Agent(obs_dim, act_dim, discrete, args.hidden_sizes).to(device)  # [A2C 1-2] actor phi, critic theta
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)

    T, N = args.num_steps, args.num_envs
    batch_size = T * N
    num_iterations = max(1, args.total_timesteps // batch_size)
    # rollout storage, preallocated host arrays: a step writes numpy, the update moves one batch to the device
    obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    act_buf = np.zeros((T, N) if discrete else (T, N, act_dim), dtype=np.float32)
    rew_buf, done_buf, val_buf = (np.zeros((T, N), dtype=np.float32) for _ in range(3))

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
        for iteration in range(num_iterations):  # [A2C 3] repeat
            if args.anneal_lr:  # (the slides' A2C uses a fixed step size; annealing steadies the end)
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - iteration / num_iterations)
            fix_t, fix_env, fix_obs = [], [], []  # truncated steps whose V(final obs) we still need
            for t in range(T):  # [A2C 4] T steps in each of the N envs
                obs_buf[t] = obs_np  # [A2C 5] observe s^t
                with torch.inference_mode():
                    obs_t = to_device(obs_np)
                    action, _ = agent.act(obs_t)  # [A2C 6] a^t ~ pi(.|s^t; phi)
                    value = agent.value(obs_t)
                a_np = action.cpu().numpy()
                act_buf[t], val_buf[t] = a_np, value.cpu().numpy()
                # [A2C 7] apply a^t, observe r^t and s^{t+1}
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

            # [A2C 8-13] critic targets y (N-step returns) and advantages; V(s^{t+1}) is the next stored
            # value, V(final obs) after a truncation and 0 after a termination
            with torch.inference_mode():
                last_value = agent.value(to_device(obs_np)).cpu().numpy()
                final_values = agent.value(to_device(np.stack(fix_obs))).cpu().numpy() if fix_t else None
            next_values = np.concatenate([val_buf[1:], last_value[None]]) * (1.0 - done_buf)
            if fix_t:
                next_values[fix_t, fix_env] = final_values
            if args.gae_lambda < 1.0:
                advantages = gae(rew_buf, val_buf, next_values, done_buf, args.gamma, args.gae_lambda)
                returns = advantages + val_buf
            else:
                returns = n_step_returns(rew_buf, next_values, done_buf, args.gamma)
                advantages = returns - val_buf
            advantages, returns, values = to_device(advantages), to_device(returns), to_device(val_buf)

            b_obs, b_act = to_device(obs_buf).reshape(batch_size, obs_dim), to_device(act_buf).flatten(0, 1)
            b_adv, b_ret, b_val = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
            if args.norm_adv:
                b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)
            logp, entropy, new_val = agent.evaluate(b_obs, b_act)
            pg_loss = -(b_adv * logp).mean()  # [A2C 14] actor loss
            v_loss = 0.5 * (b_ret - new_val).pow(2).mean()  # [A2C 15] critic loss
            loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
            optimizer.zero_grad(set_to_none=True)  # [A2C 16-17] one step on phi and theta
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
            optimizer.step()

            var_y = b_ret.var()
            explained_var = float("nan") if var_y == 0 else float(1 - (b_ret - b_val).var() / var_y)
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy.mean().item(), global_step)
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
