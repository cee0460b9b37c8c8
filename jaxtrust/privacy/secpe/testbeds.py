"""The two test beds of ``jaxtrust reproduce secpe``: a model, a prompt ensemble and the task.

* :func:`inhouse_testbed` — a small causal LM trained here (the training core's
  :func:`~jaxtrust.training.finetune`) on the 8-topic task of :mod:`~jaxtrust.privacy.secpe.topics`,
  in two of its six prompt formats; the four held-out formats are new prompts to it, so single
  prompts differ in quality as prompts of a pretrained model do;
* :func:`smollm2_testbed` — SmolLM2-135M-Instruct (the packaged GGUF asset) zero-shot on the same
  sentences, with four chat prompts and the topic names as label words.

Both return a :class:`Testbed`: what the reproduction evaluates, with the label-preserving attack
vocabulary (substitutes: filler words; protected: every cue word).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from flax import nnx

from jaxtrust.data import WordTokenizer, collate
from jaxtrust.data.assets import asset_path
from jaxtrust.models import CausalLM, LMConfig, load_pretrained, load_tokenizer
from jaxtrust.privacy.secpe.prompts import PromptEnsemble
from jaxtrust.privacy.secpe.sentiment import word_token_ids
from jaxtrust.privacy.secpe.topics import CHAT_TEMPLATES, FILLERS, TEMPLATES, TopicTask
from jaxtrust.training import adamw_cosine, finetune

__all__ = ["Testbed", "inhouse_testbed", "smollm2_testbed"]


@dataclasses.dataclass(frozen=True)
class Testbed:
    """A model with its prompt ensemble and attack vocabulary.

    Attributes:
      model: a jaxtrust causal LM.
      ensemble: templates + verbalizer.
      allowed: substitute token ids (label-neutral words).
      protected: token ids never edited (the words that carry the label).
      decode: token ids -> text.
      description: one line for the report.
      train_s: seconds spent training (0 for a pretrained model).
    """

    model: Any
    ensemble: PromptEnsemble
    allowed: list[int]
    protected: list[int]
    decode: Callable[[Sequence[int]], str]
    description: str
    train_s: float = 0.0


def inhouse_testbed(
    task: TopicTask,
    *,
    seed: int,
    steps: int,
    examples: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    trained_templates: int = 2,
    score: str = "logprob",
) -> Testbed:
    """Train a small causal LM on the topic task and return it with its six-prompt ensemble.

    Training rows are ``<bos> template(text) <sep> topic``, the loss on the topic word only, in
    the first ``trained_templates`` formats (equal shares); the other templates are held-out
    formats the model meets only at test time, like new prompts given to a tuned model.
    """
    tok = WordTokenizer(task.words)
    ensemble = PromptEnsemble.for_word_tokenizer(tok, TEMPLATES, task.label_words, score=score)
    rng = np.random.default_rng([seed, 71])
    texts, labels = task.sample(examples, split="train", seed=seed)
    if not 1 <= trained_templates <= len(TEMPLATES):
        raise ValueError(
            f"trained_templates must be in [1, {len(TEMPLATES)}], got {trained_templates}"
        )
    which = rng.integers(0, trained_templates, size=examples)
    prompts = [
        [tok.bos_id, *tok.encode(TEMPLATES[j].format(text=t)), tok.sep_id]
        for j, t in zip(which, texts, strict=True)
    ]
    answers = [tok.encode(task.label_words[y]) for y in labels]
    pool = collate(prompts, answers, pad_id=tok.pad_id).as_dict()
    config = LMConfig.for_tokenizer(
        tok,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_layers=num_layers,
        num_heads=4,
        num_kv_heads=2,
    )
    model = CausalLM(config, rngs=nnx.Rngs(seed))
    tx = adamw_cosine(learning_rate, steps, warmup_steps=min(50, steps // 10))
    key = ("secpe-topics", learning_rate, steps)  # one compiled step per recipe, across seeds
    result = finetune(model, pool, tx, steps=steps, batch_size=batch_size, seed=seed, step_key=key)
    cue_ids = [tok.encode(w)[0] for w in task.cue_words]
    return Testbed(
        result.model,
        ensemble,
        [tok.encode(w)[0] for w in FILLERS],
        cue_ids,
        lambda ids: tok.decode([int(i) for i in ids]),
        f"in-house causal LM ({num_layers} layers, d={hidden_size}, seed {seed}, {steps} steps on "
        f"{examples} rows), 8-topic task",
        train_s=float(result.seconds),
    )


def smollm2_testbed(task: TopicTask, *, score: str = "logprob") -> Testbed:
    """SmolLM2-135M-Instruct zero-shot on the topic sentences (four chat prompts).

    The label words of a class are the forms of its topic name that are single tokens at the
    start of the assistant's answer (``"music"``, ``"Music"``; ``"Sports"`` for sport).
    """
    path = asset_path("smollm2")
    model, tok = load_pretrained(path), load_tokenizer(path)

    def tokenize(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    label_words = []
    for name in task.label_words:
        candidates = (name, name.capitalize(), name + "s", (name + "s").capitalize())
        forms = [f for f in candidates if len(tokenize(f)) == 1]
        if not forms:
            raise ValueError(f"topic {name!r} is not one token for SmolLM2 in any form")
        label_words.append(tuple(forms))
    ensemble = PromptEnsemble.for_chat(tok, CHAT_TEMPLATES, label_words, score=score)
    protected = word_token_ids(ensemble.tokenize, task.cue_words, single_only=False)
    allowed = [t for t in word_token_ids(ensemble.tokenize, FILLERS) if t not in set(protected)]
    return Testbed(
        model,
        ensemble,
        allowed,
        protected,
        lambda ids: tok.decode([int(i) for i in ids]),
        "SmolLM2-135M-Instruct (Q4_1 GGUF), zero-shot, 8-topic task",
    )
