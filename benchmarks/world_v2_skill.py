"""Is the world-v2 fine-tuning skill learnable in the SPF quick budget? SFT of the seed-0 v2
aligned model for 80 steps at three learning rates, benign and 10 % poisoned data; prints refusal,
utility and held-out perplexity (the figures quoted for the skill in the issue notes).

Usage: python benchmarks/world_v2_skill.py [classify|reverse]   (the task; default classify)"""

import sys
import time

from jaxtrust.data.safety_world_v2 import SafetyWorldV2
from jaxtrust.safety.spf._reproduce_bench import attack_pool, run_method
from jaxtrust.safety.spf.reproduce import PRESETS
from jaxtrust.zoo.safety_eval import safety_batch_of, summarize
from jaxtrust.zoo.safety_lm import ZooConfig, aligned_model

cfg = PRESETS["quick"]
task = sys.argv[1] if len(sys.argv) > 1 else "classify"
# the task is not part of the zoo's key: both tasks fine-tune the same aligned model
a = aligned_model(seed=0, config=ZooConfig.v2(world=SafetyWorldV2(task=task)))
world = a.world
print("aligned", summarize(a.model, world, n=128, seed=50_000), flush=True)
for attack in ("benign", "poison_10"):
    pool, share = attack_pool(world, attack, cfg.train_examples, 50, cfg.zoo.seq_len)
    print(attack, share, flush=True)
    safety = safety_batch_of(world, 1, seed=50, marginal=False, seq_len=cfg.zoo.seq_len)
    for lr in (5e-5, 2e-4, 5e-4):
        t = time.time()
        m, _, _ = run_method(
            "sft", a.model, pool, safety, config=cfg, lr=lr, steps=cfg.steps, seed=50
        )
        s = summarize(m, world, n=128, seed=50_000)
        print(
            f"{attack} sft lr {lr:g} {time.time() - t:.0f}s refusal {s['refusal_rate']:.3f} "
            f"utility {s['utility']:.3f} ppl {s['perplexity']:.2f}",
            flush=True,
        )
