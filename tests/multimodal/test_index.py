"""Exact inner-product search against brute force; the sharded search on 8 devices against one."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.multimodal.index import add, build_index, search, sharded_search
from jaxtrust.training.sharding import make_mesh


def brute_force(emb, queries, k):
    scores = queries @ emb.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 60),
    q=st.integers(1, 5),
    d=st.integers(1, 8),
    seed=st.integers(0, 999),
    data=st.data(),
)
def test_search_equals_brute_force(n, q, d, seed, data):
    k = data.draw(st.integers(1, n))
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(q, d)).astype(np.float32)
    ids = rng.permutation(10 * n)[:n]
    result = search(build_index(emb, ids), queries, k=k)
    scores, rows = brute_force(emb, queries, k)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.rows, rows)
    np.testing.assert_array_equal(result.ids, ids[rows])


@pytest.mark.parametrize("n,k", [(64, 5), (37, 3), (5, 5), (1000, 10)])
def test_sharded_search_on_8_devices_equals_one_device(n, k):
    assert len(jax.devices()) == 8
    rng = np.random.default_rng(n)
    emb = rng.normal(size=(n, 16)).astype(np.float32)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    index = build_index(emb)
    single = search(index, queries, k=k)
    sharded = sharded_search(index, queries, k=k, mesh=make_mesh(data=8))
    np.testing.assert_array_equal(sharded.rows, single.rows)
    np.testing.assert_allclose(sharded.scores, single.scores, rtol=1e-5, atol=1e-5)


def test_add_appends_rows_and_ids():
    index = build_index(np.eye(3, dtype=np.float32))
    bigger = add(index, np.array([[0.0, 0.0, 2.0]], np.float32), ids=np.array([99]))
    assert bigger.size == 4 and index.size == 3
    assert search(bigger, np.array([[0.0, 0.0, 1.0]], np.float32), k=1).ids.tolist() == [[99]]


def test_bad_inputs(own_error_messages):
    with pytest.raises(ValueError, match="empty"):
        build_index(np.zeros((0, 4), np.float32))
    index = build_index(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="k must be"):
        search(index, np.ones((1, 3), np.float32), k=4)
    with pytest.raises(ValueError, match="queries have dim"):
        search(index, np.ones((1, 2), np.float32), k=1)
    with pytest.raises(TypeError, match="float"):
        build_index(np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match="ids must be"):
        build_index(np.eye(2, dtype=np.float32), ids=[1])
