"""Where a jaxtrust train step spends its time: forward, forward+backward (with and without the
vocabulary head and loss), and the AdamW update, each as its own jitted function.

    python benchmarks/train_step_profile.py [--config smollm2|tiny] [--batch 4] [--seq 128]

Prints a table and appends it to benchmarks/RESULTS.md. Random weights; compile excluded;
median of ``--repeats`` calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results, markdown_table  # noqa: E402

from jaxtrust.models import CausalLM, LMConfig  # noqa: E402
from jaxtrust.training import lm_loss  # noqa: E402


def median_seconds(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = LMConfig.smollm2_135m() if args.config == "smollm2" else LMConfig.tiny()
    graphdef, params, rest = nnx.split(CausalLM(config, rngs=nnx.Rngs(0)), nnx.Param, ...)
    tokens = jnp.ones((args.batch, args.seq), jnp.int32)
    loss_mask = jnp.ones(tokens.shape, jnp.float32)

    def forward(p, t):
        return nnx.merge(graphdef, p, rest)(t).logits

    def loss_with_head(p, t):
        return lm_loss(forward(p, t), t, loss_mask)[0]

    def loss_without_head(p, t):
        hidden = nnx.merge(graphdef, p, rest)(t, output_hidden_states=True).hidden_states[-1]
        return jnp.mean(hidden**2)

    tx = optax.adamw(1e-4)
    opt_state = tx.init(params)
    grads = jax.jit(jax.grad(loss_with_head))(params, tokens)
    rows = [
        [
            "forward (logits)",
            median_seconds(jax.jit(forward), params, tokens, repeats=args.repeats),
        ],
        [
            "forward + backward, LM loss",
            median_seconds(
                jax.jit(jax.value_and_grad(loss_with_head)), params, tokens, repeats=args.repeats
            ),
        ],
        [
            "forward + backward, no head/loss",
            median_seconds(
                jax.jit(jax.value_and_grad(loss_without_head)), params, tokens, repeats=args.repeats
            ),
        ],
        [
            "AdamW update",
            median_seconds(jax.jit(tx.update), grads, opt_state, params, repeats=args.repeats),
        ],
    ]
    table = markdown_table(["part", "seconds"], rows)
    print(table)
    append_results(
        f"Train-step profile: {args.config}, {args.batch}x{args.seq}",
        f"python benchmarks/train_step_profile.py --config {args.config} --batch {args.batch} "
        f"--seq {args.seq}",
        table,
        notes="Each part is its own jitted function (compile excluded, median of repeats); the "
        "train step of benchmarks/lm_throughput.py fuses them.",
    )


if __name__ == "__main__":
    main()
