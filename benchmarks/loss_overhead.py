"""Overhead of the `weighted` distrust objective over mlx-lm's plain token-mean CE, in one LoRA step.

Both arms run the same compiled step (value_and_grad + AdamW update + mx.eval) on the same small
mlx-lm Llama and the same batch, rotating arm order every round so load drift hits both equally.
The peer is mlx-lm's own ``default_loss``. Target: median(weighted) / median(plain) <= 1.02.
An A/A arm (a second, identical plain step) prints how large a difference this machine's noise
alone produces, so a ratio can be read against it.

    python benchmarks/loss_overhead.py [--steps 30] [--hidden 128] [--layers 2] [--batch 8] [--seq 64]
"""

from __future__ import annotations

import yourai  # noqa: F401  (first: preloads OpenBLAS before mlx; see yourai/_blas.py)
import argparse
import statistics
import time
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx_lm.models import llama
from mlx_lm.tuner.trainer import default_loss
from mlx_lm.tuner.utils import linear_to_lora_layers

from yourai.formula import DEFAULT_ALPHA, DEFAULT_LAMBDA
from yourai.loss import distrust_weights, objective_loss

SEED = 0
WARMUP_STEPS = 3  # compile + allocator warm-up, excluded from the medians
TARGET_RATIO = 1.02


def build_model(hidden: int, layers: int, vocab: int) -> nn.Module:
    """A frozen random Llama with rank-8 LoRA on every block: the shape of the default training run."""
    mx.random.seed(SEED)
    args = llama.ModelArgs(
        model_type="llama", hidden_size=hidden, num_hidden_layers=layers, intermediate_size=2 * hidden,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=vocab,
        tie_word_embeddings=True,
    )
    model = llama.Model(args)
    model.freeze()
    linear_to_lora_layers(model, layers, {"rank": 8, "scale": 20.0, "dropout": 0.0})
    mx.eval(model.parameters())
    return model


def make_batch(batch: int, seq: int, vocab: int) -> dict[str, mx.array]:
    """Ragged random sequences plus the per-sample metadata the weighted objective consumes."""
    rng = np.random.default_rng(SEED)
    tokens = rng.integers(0, vocab, size=(batch, seq + 1)).astype(np.int32)
    targets_per_sample = rng.integers(seq // 2, seq + 1, size=batch)
    w_auth = rng.uniform(0.0, 0.99, size=batch)
    entropy_bits = rng.uniform(0.0, 8.0, size=batch)
    mask = (np.arange(seq)[None, :] < targets_per_sample[:, None]).astype(np.float32)
    return {
        "tokens": mx.array(tokens),
        "lengths": mx.array(np.stack([np.ones(batch, np.int32), targets_per_sample.astype(np.int32)], axis=1)),
        "mask": mx.array(mask),
        "weights": mx.array(distrust_weights(w_auth, entropy_bits, "monotone")),
        "w_auth": mx.array(w_auth.astype(np.float32)),
        "entropy_bits": mx.array(entropy_bits.astype(np.float32)),
    }


def plain_loss(model: nn.Module, batch: dict) -> mx.array:
    return default_loss(model, batch["tokens"], batch["lengths"])[0]


def weighted_loss(model: nn.Module, batch: dict) -> mx.array:
    logits = model(batch["tokens"][:, :-1])
    total, _ = objective_loss(
        logits, batch["tokens"][:, 1:], batch["mask"], batch["weights"], batch["w_auth"], batch["entropy_bits"],
        mode="weighted", lambda_weight=DEFAULT_LAMBDA, alpha=DEFAULT_ALPHA,
    )
    return total


def make_step(model: nn.Module, loss_fn) -> callable:
    """A compiled LoRA step as mlx-lm's trainer builds it (state captured, update inside)."""
    optimizer = optim.AdamW(learning_rate=1e-4)
    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch: dict) -> mx.array:
        loss, grads = loss_and_grad(model, batch)
        optimizer.update(model, grads)
        return loss

    def run(batch: dict) -> float:
        started = time.perf_counter()
        mx.eval(step(batch), state)
        return time.perf_counter() - started

    return run


def time_arms(arms: dict, batch: dict, steps: int) -> dict[str, list[float]]:
    """Run every arm once per round, rotating the order, so load drift on a shared machine hits all."""
    names = list(arms)
    times_s: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(WARMUP_STEPS + steps):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed_s = arms[name](batch)
            if round_index >= WARMUP_STEPS:
                times_s[name].append(elapsed_s)
    return times_s


def report(times_s: dict[str, list[float]], args: argparse.Namespace) -> None:
    """Ratio of medians (the target), the median of per-round ratios, and the A/A noise floor."""
    medians_ms = {name: 1000 * statistics.median(values) for name, values in times_s.items()}
    print(f"model: llama hidden={args.hidden} layers={args.layers} vocab={args.vocab}, LoRA rank 8; "
          f"batch {args.batch}x{args.seq}; {args.steps} timed steps per arm; mx {mx.__version__} {mx.default_device()}")
    for name, value in medians_ms.items():
        print(f"  {name:>14}: median {value:9.2f} ms/step")
    paired = statistics.median(w / p for w, p in zip(times_s["weighted"], times_s["plain"]))
    if "plain (again)" in times_s:
        noise = medians_ms["plain (again)"] / medians_ms["plain"]
        print(f"A/A control plain(again)/plain = {noise:.4f} (how far two identical arms differ here)")
    print(f"median of per-round ratios weighted/plain = {paired:.4f}")
    ratio = medians_ms["weighted"] / medians_ms["plain"]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"ratio weighted/plain = {ratio:.4f} ({verdict} target <= {TARGET_RATIO})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per arm (>= 20)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--no-control", action="store_true", help="skip the A/A arm (a second plain copy)")
    args = parser.parse_args()
    if args.steps < 20:
        parser.error("--steps must be >= 20 for a stable median")
    batch = make_batch(args.batch, args.seq, args.vocab)
    losses = {"plain": plain_loss, "weighted": weighted_loss}
    if not args.no_control:
        losses["plain (again)"] = plain_loss
    arms = {name: make_step(build_model(args.hidden, args.layers, args.vocab), fn) for name, fn in losses.items()}
    report(time_arms(arms, batch, args.steps), args)


if __name__ == "__main__":
    main()
