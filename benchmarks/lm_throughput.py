"""Forward tokens/s and AdamW train-step time: jaxtrust CausalLM (jax.jit) vs transformers'
LlamaForCausalLM (torch eager, CPU), on the same model.

Both models are built from one HF-style llama config and one set of random HF-named tensors
(the jaxtrust model with ``model_from_hf_tensors``, the torch model with ``load_state_dict``),
so they compute the same function: the script checks their logits agree before timing.
JAX compile time is measured separately (``lower().compile()``) and excluded from the steady
state; torch gets one warm-up call. Same batch, same sequence length, the same threads (the
process's CPU affinity).

    python benchmarks/lm_throughput.py            # tiny + SmolLM2-135M-sized
    python benchmarks/lm_throughput.py --quick    # fewer repeats, shorter sequences
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results, markdown_table  # noqa: E402


def llama_config(name: str) -> dict:
    base = dict(
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        rms_norm_eps=1e-5,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attention_bias=False,
    )
    if name == "tiny":
        return base | dict(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            rope_theta=10000.0,
            tie_word_embeddings=False,
        )
    if name == "smollm2-135m":
        return base | dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            max_position_embeddings=8192,
            rope_theta=100000.0,
            tie_word_embeddings=True,
        )
    raise ValueError(name)


def random_llama_tensors(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hq = config["num_attention_heads"] * config["head_dim"]
    hkv = config["num_key_value_heads"] * config["head_dim"]

    def w(*shape, fan_in):
        return (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(fan_in)).astype(np.float32)

    tensors = {
        "model.embed_tokens.weight": w(v, d, fan_in=1) * 0.02,
        "model.norm.weight": np.ones(d, np.float32),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": w(hq, d, fan_in=d),
            p + "self_attn.k_proj.weight": w(hkv, d, fan_in=d),
            p + "self_attn.v_proj.weight": w(hkv, d, fan_in=d),
            p + "self_attn.o_proj.weight": w(d, hq, fan_in=hq),
            p + "mlp.gate_proj.weight": w(f, d, fan_in=d),
            p + "mlp.up_proj.weight": w(f, d, fan_in=d),
            p + "mlp.down_proj.weight": w(d, f, fan_in=f),
            p + "input_layernorm.weight": np.ones(d, np.float32),
            p + "post_attention_layernorm.weight": np.ones(d, np.float32),
        }
    if not config["tie_word_embeddings"]:
        tensors["lm_head.weight"] = w(v, d, fan_in=d)
    return tensors


def bench_jax(config, tensors, tokens, repeats):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxtrust.models.config import LMConfig
    from jaxtrust.models.convert import model_from_hf_tensors

    model = model_from_hf_tensors(LMConfig.from_hf(config), tensors, dtype=jnp.float32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.asarray(tokens)

    def forward(params, rest, x):
        return nnx.merge(graphdef, params, rest)(x).logits

    def loss_fn(params, rest, x):
        logits = forward(params, rest, x)[:, :-1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, x[:, 1:]).mean()

    tx = optax.adamw(1e-4, weight_decay=1e-4)

    def train_step(params, opt_state, rest, x):
        loss, grads = jax.value_and_grad(loss_fn)(params, rest, x)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    start = time.perf_counter()
    forward_c = jax.jit(forward).lower(params, rest, x).compile()
    compile_fwd = time.perf_counter() - start
    start = time.perf_counter()
    step_c = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, opt_state, rest, x).compile()
    compile_step = time.perf_counter() - start

    logits = np.asarray(forward_c(params, rest, x))
    fwd_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward_c(params, rest, x).block_until_ready()
        fwd_times.append(time.perf_counter() - start)
    params, opt_state, loss = step_c(
        params, opt_state, rest, x
    )  # warm-up (first-touch allocations)
    loss.block_until_ready()
    step_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params, opt_state, loss = step_c(params, opt_state, rest, x)
        loss.block_until_ready()
        step_times.append(time.perf_counter() - start)
    return dict(
        logits=logits,
        fwd=float(np.median(fwd_times)),
        step=float(np.median(step_times)),
        compile_fwd=compile_fwd,
        compile_step=compile_step,
    )


def bench_torch(config, tensors, tokens, repeats, threads):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(threads)
    hf = LlamaConfig(
        **{k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    )
    model = LlamaForCausalLM(hf).float()
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False
    )
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"torch state mismatch: missing {missing}, unexpected {unexpected}")
    if config["tie_word_embeddings"]:
        model.tie_weights()
    x = torch.from_numpy(tokens.astype(np.int64))
    model.eval()
    with torch.inference_mode():
        logits = model(x).logits.numpy()
        fwd_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            fwd_times.append(time.perf_counter() - start)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        return loss

    step()  # warm-up
    step_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        step_times.append(time.perf_counter() - start)
    return dict(logits=logits, fwd=float(np.median(fwd_times)), step=float(np.median(step_times)))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter sequences")
    parser.add_argument("--configs", default="tiny,smollm2-135m")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    threads = len(os.sched_getaffinity(0))
    shapes = {"tiny": (8, 128), "smollm2-135m": (4, 128)}
    if args.quick:
        shapes = {"tiny": (8, 64), "smollm2-135m": (2, 64)}
    repeats = 3 if args.quick else 5

    rows = []
    for name in args.configs.split(","):
        config = llama_config(name)
        batch, seq = shapes[name]
        tensors = random_llama_tensors(config)
        tokens = (
            np.random.default_rng(1)
            .integers(3, config["vocab_size"], size=(batch, seq))
            .astype(np.int32)
        )
        j = bench_jax(config, tensors, tokens, repeats)
        t = bench_torch(config, tensors, tokens, repeats, threads)
        diff = float(np.max(np.abs(j["logits"] - t["logits"])))
        n_tok = batch * seq
        rows.append(
            [
                name,
                f"{batch}x{seq}",
                n_tok / j["fwd"],
                n_tok / t["fwd"],
                t["fwd"] / j["fwd"],
                j["step"] * 1e3,
                t["step"] * 1e3,
                t["step"] / j["step"],
                f"{j['compile_fwd']:.1f} / {j['compile_step']:.1f}",
                f"{diff:.1e}",
            ]
        )
        print(f"{name}: done", flush=True)
    headers = [
        "config",
        "batch x seq",
        "jax fwd tok/s",
        "torch fwd tok/s",
        "fwd speedup (torch/jax time)",
        "jax train step ms",
        "torch train step ms",
        "step speedup",
        "jax compile s (fwd / step)",
        "max abs logit diff",
    ]
    table = markdown_table(headers, rows)
    print(table)
    if not args.no_record:
        append_results(
            "LM forward / train-step throughput: jaxtrust (jax.jit) vs transformers (torch eager)",
            "python benchmarks/lm_throughput.py" + (" --quick" if args.quick else ""),
            table,
            notes=(
                f"Median of {repeats} timed runs after warm-up; JAX compile time excluded from the "
                "steady "
                f"state and reported separately; {threads} threads for both. Random weights, same "
                "model in "
                "both frameworks (max abs logit diff column). Train step = AdamW (lr 1e-4, wd "
                "1e-4) on the "
                "next-token loss. The machine's 2 cores are shared with other jobs, so figures are "
                "noisy."
            ),
        )


if __name__ == "__main__":
    main()
