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
# (method, rank, refresh_every, schedule); see run_one for the two schedules
VARIANTS = [
    ("adamw", None, None, "-"),
    ("spf", 4, 1, "split"),
    ("spf", 4, 10, "cond"),
    ("spf", 4, 10, "split"),
    ("spf", 4, None, "split"),
    ("spf", 16, 10, "split"),
]


def run_one(model_name: str, method: str, rank, refresh, schedule: str, steps: int) -> dict:
    """Time one configuration (paired with AdamW). Schedules of the safety gradient:

    * ``cond``: one compiled step; the safety gradient is a ``lax.cond`` (gradient when the basis
      is due, zeros otherwise) whose result is always passed to ``spf``;
    * ``split``: two compiled steps, one with ``safety_grads`` (used when the basis is due) and
      one without (``spf`` keeps its basis when ``safety_grads`` is None); the Python loop picks
      one by the step number. Non-refresh steps then do neither the zeros nor the ``lax.cond``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from jaxtrust.models import CausalLM, LMConfig
    from jaxtrust.safety.spf import spf
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
    data = {
        "tokens": tokens,
        "attention_mask": np.ones((batch, seq), bool),
        "loss_mask": np.ones((batch, seq), np.float32),
    }
    safety = {k: v[:1] for k, v in data.items()}

    def loss_of(m, b):
        return lm_loss(
            m(b["tokens"], attention_mask=b["attention_mask"]).logits, b["tokens"], b["loss_mask"]
        )

    def loss_fn(m, b, key):
        del key
        return loss_of(m, b)

    def safety_grads(st):
        return jax.grad(lambda p: loss_of(nnx.merge(graphdef, p, st.rest), safety)[0])(st.params)

    def cond_extra_args(st, b):
        due = (st.step == 0) if refresh is None else (st.step % refresh == 0)
        zeros = lambda: jax.tree.map(jnp.zeros_like, st.params)
        return {"safety_grads": jax.lax.cond(due, lambda: safety_grads(st), zeros)}

    if method == "adamw":
        steps_by_due = {False: make_train_step(graphdef, loss_fn, tx)}
        due_at = lambda i: False
    elif schedule == "cond" and refresh != 1:
        steps_by_due = {
            False: make_train_step(graphdef, loss_fn, tx, extra_args_fn=cond_extra_args)
        }
        due_at = lambda i: False
    else:
        steps_by_due = {
            True: make_train_step(
                graphdef,
                loss_fn,
                tx,
                extra_args_fn=lambda st, b: {"safety_grads": safety_grads(st)},
            )
        }
        if refresh != 1:
            steps_by_due[False] = make_train_step(graphdef, loss_fn, tx)
        due_at = lambda i: i == 0 if refresh is None else i % refresh == 0
    mems = [f.lower(state, data).compile().memory_analysis() for f in steps_by_due.values()]
    step_mb = max(
        (
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )
        / 2**20
        for m in mems
    )

    def block(pick, st, n, first):
        start = time.perf_counter()
        for i in range(first, first + n):
            st, metrics = pick(i)(st, data)
            jax.block_until_ready(metrics["loss"])
        return st, time.perf_counter() - start

    pick = lambda i: (
        steps_by_due[due_at(i)] if len(steps_by_due) > 1 else next(iter(steps_by_due.values()))
    )
    # warm-up: step 0 (due, compiles) and step 1 (compiles the other step, if any)
    state, _ = block(pick, state, 2, 0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    base_tx = optax.adamw(1e-4)
    base_graphdef, base_state = init_train_state(CausalLM(config, rngs=nnx.Rngs(1)), base_tx)
    base_step = make_train_step(base_graphdef, loss_fn, base_tx)
    base_pick = lambda i: base_step
    base_state, _ = block(base_pick, base_state, 2, 0)
    total, base_total, done = 0.0, 0.0, 2
    for _ in range(2):
        # blocks start at a multiple of 10 after the warm-up: steps 10..10+steps-1, ...
        first = 10 * (-(-done // 10))
        state, t = block(pick, state, steps, first)
        done = first + steps
        base_state, tb = block(base_pick, base_state, steps, 0)
        total, base_total = total + t, base_total + tb
    return {
        "step_s": total / (2 * steps),
        "base_step_s": base_total / (2 * steps),
        "overhead": total / base_total - 1.0,
        "step_mb": step_mb,
        "peak_rss_mb": rss_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--steps", type=int, default=20, help="steps per timed block (a multiple of 10)"
    )
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument(
        "--one",
        nargs=5,
        metavar=("MODEL", "METHOD", "RANK", "REFRESH", "SCHEDULE"),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    if args.one:
        model, method, rank, refresh, schedule = args.one
        as_int = lambda x: None if x == "None" else int(x)
        print(
            json.dumps(run_one(model, method, as_int(rank), as_int(refresh), schedule, args.steps))
        )
        return

    from _common import append_results, markdown_table

    rows = []
    for model in ["tiny"] if args.quick else list(MODELS):
        steps = args.steps if model == "tiny" else max(10, args.steps // 2)
        for method, rank, refresh, schedule in VARIANTS:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--steps",
                    str(steps),
                    "--one",
                    model,
                    method,
                    str(rank),
                    str(refresh),
                    schedule,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            label = (
                "AdamW (vs AdamW: noise floor)"
                if method == "adamw"
                else f"SPF rank {rank}, refresh "
                f"{'once' if refresh is None else f'every {refresh}'} ({schedule}) + AdamW"
            )
            rows.append(
                [
                    model,
                    label,
                    f"{result['step_s'] * 1e3:.1f} ms",
                    f"{result['base_step_s'] * 1e3:.1f} ms",
                    f"{result['overhead'] * 100:+.1f} %",
                    f"{result['step_mb']:.1f} MB",
                    f"{result['peak_rss_mb']:.0f} MB",
                ]
            )
            print(rows[-1], flush=True)
    table = markdown_table(
        [
            "model",
            "optimizer",
            "step time (mean)",
            "paired AdamW step",
            "overhead vs AdamW",
            "compiled step buffers",
            "peak RSS",
        ],
        rows,
    )
    print(table)
    if not args.no_append:
        command = (
            "python benchmarks/spf_overhead.py"
            + (" --quick" if args.quick else "")
            + f" --steps {args.steps}"
        )
        notes = (
            f"Batch x seq: {MODELS}. Paired timing (see the script's docstring); "
            f"{2 * args.steps} timed steps per configuration on the tiny model, "
            f"{2 * max(10, args.steps // 2)} on the 135M one."
        )
        append_results("SPF overhead: AdamW vs SPF+AdamW", command, table + "\n", notes)


if __name__ == "__main__":
    main()
