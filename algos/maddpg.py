"""Multi-Agent DDPG (MADDPG): centralised training, decentralised execution.

Each agent i has its own deterministic actor mu_i(o_i), which sees only its own observation,
and its own critic Q_i(x, a_1, ..., a_n), which sees every agent's observation x and action.
Because the critic conditions on all actions, the environment looks stationary to it even as
the other agents' policies change. Follows slides/001 ("Implementing MADDPG": centralised
critics over all observations and actions, decentralised actors) on top of DDPG (same deck).
Steps, in our own numbering:

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
largest. Every MPE episode ends by truncation after --max-cycles steps: targets bootstrap.

Examples:
    python algos/maddpg.py                                    # simple_spread_v3, 3 agents
    python algos/maddpg.py --env-id simple_speaker_listener_v4 --cuda
    python algos/maddpg.py --env-id simple_tag_v3 --total-timesteps 500000
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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from mpe2 import simple_adversary_v3, simple_speaker_listener_v4, simple_spread_v3, simple_tag_v3
from torch.utils.tensorboard import SummaryWriter

ENVS = {
    "simple_spread_v3": simple_spread_v3,
    "simple_adversary_v3": simple_adversary_v3,
    "simple_speaker_listener_v4": simple_speaker_listener_v4,
    "simple_tag_v3": simple_tag_v3,
}


@dataclass
class Args:
    env_id: str = "simple_spread_v3"
    """MPE env from mpe2: simple_spread_v3, simple_adversary_v3, simple_speaker_listener_v4, simple_tag_v3"""
    seed: int = 1
    """seed of torch, numpy, the env and the noise"""
    total_timesteps: int = 300_000
    """training budget, in joint env steps"""
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
    eval_frequency: int = 30_000
    """joint steps between periodic greedy evaluations (0: only at the end)"""
    eval_episodes: int = 100
    """evaluation episodes with noise-free actors"""
    target_return: float | None = -17.0
    """per-agent return that counts as solved, for the steps-to-threshold record"""
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


# ----------------------------------------------------------------------------- set-up
def make_env(args: Args):  # noqa: ANN201 (a PettingZoo ParallelEnv)
    if args.env_id not in ENVS:
        raise UsageError(f"unknown env id {args.env_id!r}; {SCRIPT} supports {', '.join(ENVS)}.")
    kwargs = {"max_cycles": args.max_cycles, "continuous_actions": True}
    if args.env_id == "simple_spread_v3":
        kwargs |= {"N": 3, "local_ratio": args.local_ratio}
    return ENVS[args.env_id].parallel_env(**kwargs)


def check_args(args: Args) -> None:
    positive = (
        "total_timesteps",
        "max_cycles",
        "learning_rate",
        "buffer_size",
        "batch_size",
        "train_frequency",
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
    if not 0.0 <= args.tau <= 1.0 or not 0.0 <= args.gamma <= 1.0 or not 0.0 <= args.local_ratio <= 1.0:
        raise UsageError("--tau, --gamma and --local-ratio must lie in [0, 1].")
    if min(args.hidden_sizes, default=1) <= 0 or min(args.learning_starts, args.eval_frequency) < 0:
        raise UsageError("--hidden-sizes must be positive; --learning-starts and --eval-frequency >= 0.")
    if args.exploration_noise < 0:
        raise UsageError(f"--exploration-noise must be >= 0, got {args.exploration_noise}.")


def new_run_dir(args: Args) -> str:
    stamp = int(time.time())
    while True:  # never reuse a directory: bump the stamp until the name is free
        path = os.path.join(args.log_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__{stamp}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            stamp += 1


class Joint:
    """Packs a ParallelEnv's per-agent dicts into padded arrays and back."""

    def __init__(self, env, agents: list[str]) -> None:  # noqa: ANN001
        self.agents = agents
        self.obs_dims = [env.observation_space(a).shape[0] for a in agents]
        self.act_dims = [env.action_space(a).shape[0] for a in agents]
        self.obs_dim, self.act_dim = max(self.obs_dims), max(self.act_dims)

    def obs(self, d: dict) -> np.ndarray:
        out = np.zeros((len(self.agents), self.obs_dim), dtype=np.float32)
        for i, a in enumerate(self.agents):
            out[i, : self.obs_dims[i]] = d[a]
        return out

    def actions(self, acts: np.ndarray) -> dict:
        return {a: acts[i, : self.act_dims[i]] for i, a in enumerate(self.agents)}

    def per_agent(self, d: dict) -> np.ndarray:
        return np.array([d[a] for a in self.agents], dtype=np.float32)


@torch.inference_mode()
def evaluate(actors: Actors, args: Args, device: torch.device) -> list[float]:
    """Noise-free actors on a fresh env; returns each episode's mean per-agent return."""
    env = make_env(args)
    env.reset(seed=args.seed + 10_000)
    joint = Joint(env, list(env.possible_agents))
    returns = []
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 * (i + 1))
        total = np.zeros(len(joint.agents))
        while env.agents:
            o = torch.as_tensor(joint.obs(obs), device=device).unsqueeze(0)
            acts = actors(o)[0].cpu().numpy()
            obs, rew, _, _, _ = env.step(joint.actions(acts))
            total += joint.per_agent(rew)
        returns.append(float(total.mean()))
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
    if args.cuda and not torch.cuda.is_available():
        print(f"{SCRIPT}: warning: --cuda given but CUDA is not available; running on CPU", file=sys.stderr)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.num_threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    rng = np.random.default_rng(args.seed)
    run_dir = new_run_dir(args)
    writer = SummaryWriter(run_dir)
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    )

    obs_dict, _ = env.reset(seed=args.seed)
    joint = Joint(env, list(env.possible_agents))
    n, obs_dim, act_dim = len(joint.agents), joint.obs_dim, joint.act_dim
    act_mask = torch.zeros(n, act_dim)
    for i, d in enumerate(joint.act_dims):
        act_mask[i, :d] = 1.0
    # [MADDPG 1] actors, critics, their targets, one joint buffer
    actors = Actors(n, obs_dim, act_dim, args.hidden_sizes, act_mask).to(device)
    critics = Critics(n, obs_dim, act_dim, args.hidden_sizes).to(device)
    actors_target = Actors(n, obs_dim, act_dim, args.hidden_sizes, act_mask).to(device)
    critics_target = Critics(n, obs_dim, act_dim, args.hidden_sizes).to(device)
    actors_target.load_state_dict(actors.state_dict())
    critics_target.load_state_dict(critics.state_dict())
    # fused: one kernel step for all parameters (measured ~20% faster per update on CPU)
    actor_opt = torch.optim.Adam(actors.parameters(), lr=args.learning_rate, fused=True)
    critic_opt = torch.optim.Adam(critics.parameters(), lr=args.learning_rate, fused=True)
    rb = ReplayBuffer(args.buffer_size, n, obs_dim, act_dim, device)
    mask_np = act_mask.numpy()

    obs = joint.obs(obs_dict)
    ep_return, ep_len, recent = np.zeros(n), 0, []
    solved_step = solved_seconds = None
    eval_seconds, global_step = 0.0, 0
    start = last_print = time.perf_counter()
    with ctrl_c_stops() as stop:
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
            next_dict, rew, term, trunc, _ = env.step(joint.actions(acts))
            rewards, terminated = joint.per_agent(rew), joint.per_agent(term)
            next_obs = joint.obs(next_dict)
            rb.add(obs, acts, rewards, next_obs, terminated)
            ep_return += rewards
            ep_len += 1
            obs = next_obs
            if not env.agents:  # the episode is over for everyone (MPE: truncation after max_cycles)
                writer.add_scalar("charts/episodic_return", ep_return.mean(), global_step)
                writer.add_scalar("charts/team_return", ep_return.sum(), global_step)
                for name, ret in zip(joint.agents, ep_return, strict=True):
                    writer.add_scalar(f"charts/agent_return/{name}", ret, global_step)
                writer.add_scalar("charts/episodic_length", ep_len, global_step)
                recent = (recent + [float(ep_return.mean())])[-100:]
                obs_dict, _ = env.reset()
                obs = joint.obs(obs_dict)
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
                    writer.add_scalar("losses/critic_loss", critic_loss.item() / n, global_step)
                    writer.add_scalar("losses/actor_loss", actor_loss.item() / n, global_step)
                    writer.add_scalar("losses/q_values", q.mean().item(), global_step)

            if args.eval_frequency and global_step % args.eval_frequency == 0 and global_step < args.total_timesteps:
                t0 = time.perf_counter()
                mean_eval = float(np.mean(evaluate(actors, args, device)))
                eval_seconds += time.perf_counter() - t0
                writer.add_scalar("eval/episodic_return", mean_eval, global_step)
                if solved_step is None and args.target_return is not None and mean_eval >= args.target_return:
                    solved_step, solved_seconds = global_step, time.perf_counter() - start - eval_seconds
            now = time.perf_counter()
            if now - last_print > 2.0 or global_step == args.total_timesteps:
                sps = global_step / (now - start - eval_seconds)
                writer.add_scalar("charts/SPS", int(sps), global_step)
                print(
                    f"step {global_step}/{args.total_timesteps} ({100 * global_step / args.total_timesteps:.0f}%) "
                    f"per-agent return(100) {np.mean(recent) if recent else float('nan'):.2f} SPS {sps:.0f} "
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

    eval_returns = [] if interrupted else evaluate(actors, args, device)
    if eval_returns:
        writer.add_scalar("eval/episodic_return", float(np.mean(eval_returns)), global_step)
        if solved_step is None and args.target_return is not None and np.mean(eval_returns) >= args.target_return:
            solved_step, solved_seconds = global_step, train_seconds
    if args.save_model:
        torch.save(
            {
                "actors": actors.state_dict(),
                "critics": critics.state_dict(),
                "actors_target": actors_target.state_dict(),
                "critics_target": critics_target.state_dict(),
                "agents": joint.agents,
                "args": asdict(args),
            },
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
        "target_return": args.target_return,
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
