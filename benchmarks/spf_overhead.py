"""Step time and peak memory of AdamW vs SPF+AdamW (issue 3's overhead goal: < 10 % when the
safety basis is refreshed every 10 steps).

Each configuration runs in a fresh subprocess: a jitted ``make_train_step`` of a causal LM with
``optax.adamw`` alone, or ``optax.chain(spf(rank, refresh_every=N), optax.adamw)``. The safety
gradient of one refusal-like example is computed inside the step only when the basis is due
(``lax.cond`` on the step counter), as a user should; ``refresh_every=1`` pays it every step,
``None`` once.

Time. The machine is shared and its load drifts, so every configuration is timed PAIRED with a
fresh AdamW baseline in the same process: blocks of ``steps`` steps alternate (configuration,
AdamW, configuration, AdamW); overhead = total configuration time / total AdamW time - 1.
``steps`` is a multiple of 10, so a mean over a block includes its share of basis refreshes
(a median would hide them). The AdamW row is AdamW paired with AdamW: its "overhead" is the
noise floor of the measurement. Compilation and two warm-up steps are excluded.

Memory. ``jax.devices()[0].memory_stats()`` is None on the CPU backend, so two measures are
given: the compiled step's own buffers (``memory_analysis()``: arguments + outputs - aliased
(donated) + temporaries; deterministic), and the process's peak RSS (``ru_maxrss``) read after
the configuration's warm-up, before the baseline is built (so it is the configuration's own).

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
    mem = step.lower(state, data).compile().memory_analysis()
    step_mb = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes) / 2**20

    def block(step_fn, st, n):
        start = time.perf_counter()
        for _ in range(n):
            st, metrics = step_fn(st, data)
            jax.block_until_ready(metrics["loss"])
        return st, time.perf_counter() - start

    state, _ = block(step, state, 2)  # warm-up (the first call compiles)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    base_tx = optax.adamw(1e-4)
    base_graphdef, base_state = init_train_state(CausalLM(config, rngs=nnx.Rngs(1)), base_tx)
    base_step = make_train_step(base_graphdef, loss_fn, base_tx)
    base_state, _ = block(base_step, base_state, 2)
    total, base_total = 0.0, 0.0
    for _ in range(2):
        state, t = block(step, state, steps)
        base_state, tb = block(base_step, base_state, steps)
        total, base_total = total + t, base_total + tb
    return {"step_s": total / (2 * steps), "base_step_s": base_total / (2 * steps), "overhead": total / base_total - 1.0, "step_mb": step_mb, "peak_rss_mb": rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block (a multiple of 10)")
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
        for method, rank, refresh in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--steps", str(steps), "--one", model, method, str(rank), str(refresh)],
                capture_output=True, text=True, check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            label = "AdamW (vs AdamW: noise floor)" if method == "adamw" else f"SPF rank {rank}, refresh {'once' if refresh is None else f'every {refresh}'} + AdamW"
            rows.append([model, label, f"{result['step_s'] * 1e3:.1f} ms", f"{result['base_step_s'] * 1e3:.1f} ms", f"{result['overhead'] * 100:+.1f} %", f"{result['step_mb']:.1f} MB", f"{result['peak_rss_mb']:.0f} MB"])
            print(rows[-1], flush=True)
    table = markdown_table(["model", "optimizer", "step time (mean)", "paired AdamW step", "overhead vs AdamW", "compiled step buffers", "peak RSS"], rows)
    print(table)
    if not args.no_append:
        command = "python benchmarks/spf_overhead.py" + (" --quick" if args.quick else "") + f" --steps {args.steps}"
        notes = f"Batch x seq: {MODELS}. Paired timing (see the script's docstring); {2 * args.steps} timed steps per configuration on the tiny model, {2 * max(10, args.steps // 2)} on the 135M one."
        append_results("SPF overhead: AdamW vs SPF+AdamW", command, table + "\n", notes)


if __name__ == "__main__":
    main()
