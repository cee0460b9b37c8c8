"""Step time and peak memory of AdamW vs SPF+AdamW (issue 3's overhead goal: < 10 % when the
safety basis is refreshed every 10 steps).

Each configuration runs in a fresh subprocess (so its peak RSS, ``ru_maxrss``, is its own; the
CPU backend has no device memory statistics): a jitted ``make_train_step`` of a causal LM with
``optax.adamw`` alone, or ``optax.chain(spf(rank, refresh_every=N), optax.adamw)``. The safety
gradient of one refusal-like example is computed inside the step only when the basis is due
(``lax.cond`` on the step counter), as a user should; ``refresh_every=1`` pays it every step,
``None`` once. Time = median of the timed steps after two warm-up steps (compile excluded).

    python benchmarks/spf_overhead.py            # tiny and SmolLM2-135M-sized
    python benchmarks/spf_overhead.py --quick    # tiny only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {"tiny": (8, 64), "smollm2-135m": (2, 64)}  # batch, seq
VARIANTS = [("adamw", None, None), ("spf", 4, 1), ("spf", 4, 10), ("spf", 4, None), ("spf", 16, 10)]


def run_one(model_name: str, method: str, rank, refresh, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from jaxtrust.models import CausalLM, LMConfig
    from jaxtrust.safety import spf
    from jaxtrust.training import init_train_state, lm_loss, make_train_step

    config = LMConfig.tiny() if model_name == "tiny" else LMConfig.smollm2_135m()
    batch, seq = MODELS[model_name]
    model = CausalLM(config, rngs=nnx.Rngs(0))
    if method == "adamw":
        tx = optax.adamw(1e-4)
    else:
        tx = optax.chain(spf(rank, refresh_every=refresh, check_inputs=False), optax.adamw(1e-4))
    graphdef, state = init_train_state(model, tx)
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, config.vocab_size, size=(batch, seq)).astype(np.int32)
    data = {"tokens": tokens, "attention_mask": np.ones((batch, seq), bool), "loss_mask": np.ones((batch, seq), np.float32)}
    safety = {k: v[:1] for k, v in data.items()}

    def loss_of(m, b):
        return lm_loss(m(b["tokens"], attention_mask=b["attention_mask"]).logits, b["tokens"], b["loss_mask"])

    def loss_fn(m, b, key):
        del key
        return loss_of(m, b)

    def extra_args_fn(st, b):
        def grads():
            return jax.grad(lambda p: loss_of(nnx.merge(graphdef, p, st.rest), safety)[0])(st.params)

        def zeros():
            return jax.tree.map(jnp.zeros_like, st.params)

        if refresh == 1:
            return {"safety_grads": grads()}
        due = (st.step == 0) if refresh is None else (st.step % refresh == 0)
        return {"safety_grads": jax.lax.cond(due, grads, zeros)}

    step = make_train_step(graphdef, loss_fn, tx, extra_args_fn=None if method == "adamw" else extra_args_fn)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        state, metrics = step(state, data)
        jax.block_until_ready(metrics["loss"])
        if i >= 2:
            times.append(time.perf_counter() - start)
    return {"step_s": float(np.median(times)), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--one", nargs=4, metavar=("MODEL", "METHOD", "RANK", "REFRESH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, method, rank, refresh = args.one
        as_int = lambda x: None if x == "None" else int(x)
        print(json.dumps(run_one(model, method, as_int(rank), as_int(refresh), args.steps)))
        return

    from _common import append_results, markdown_table

    rows = []
    for model in ["tiny"] if args.quick else list(MODELS):
        steps = args.steps if model == "tiny" else max(10, args.steps // 2)
        base = None
        for method, rank, refresh in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--steps", str(steps), "--one", model, method, str(rank), str(refresh)],
                capture_output=True, text=True, check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            base = result["step_s"] if method == "adamw" else base
            overhead = result["step_s"] / base - 1.0
            label = "AdamW" if method == "adamw" else f"SPF rank {rank}, refresh {'once' if refresh is None else f'every {refresh}'} + AdamW"
            rows.append([model, label, f"{result['step_s'] * 1e3:.1f} ms", f"{overhead * 100:+.0f} %", f"{result['peak_rss_mb']:.0f} MB"])
            print(rows[-1], flush=True)
    table = markdown_table(["model", "optimizer", "step time (median)", "overhead vs AdamW", "peak RSS"], rows)
    print(table)
    if not args.no_append:
        append_results("SPF overhead: AdamW vs SPF+AdamW", "python benchmarks/spf_overhead.py" + (" --quick" if args.quick else ""), table + "\n")


if __name__ == "__main__":
    main()
