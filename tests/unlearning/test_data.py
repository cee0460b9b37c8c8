"""mnist1d / digits loaders (fixed splits, offline) and forget/retain splits with bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.data.vision import (
    _mnist1d_arrays,
    class_forget_split,
    forget_split,
    load_digits,
    load_mnist1d,
    random_forget_split,
)


def test_mnist1d_offline_fixed_splits_and_global_rng_untouched(own_error_messages):
    # Runtime annotation checks are off here: beartype draws from Python's global generator
    # to pick which list item to check, which is not the loader's doing.
    _mnist1d_arrays.cache_clear()  # make the generator run inside this test
    np.random.seed(123)
    random.seed(7)
    np_before, py_before = np.random.get_state(), random.getstate()
    data = load_mnist1d()
    np_after = np.random.get_state()
    assert random.getstate() == py_before  # make_dataset's global seeding is undone
    assert np_after[0] == np_before[0] and np_after[2:] == np_before[2:]
    np.testing.assert_array_equal(np_after[1], np_before[1])
    assert data.x_train.shape == (4000, 40) and data.x_train.dtype == np.float32
    assert data.x_val.shape == (500, 40) and data.x_test.shape == (500, 40)
    assert set(np.unique(data.y_train)) == set(range(10))
    again = load_mnist1d()
    np.testing.assert_array_equal(again.x_test, data.x_test)
    # the published generator: the package's standard statistics (centred, unit variance)
    allx = np.concatenate([data.x_train, data.x_val, data.x_test])
    assert abs(allx.mean()) < 1e-4 and abs(allx.std() - 1) < 1e-3


def test_digits_split():
    data = load_digits()
    assert (data.num_train, len(data.y_val), len(data.y_test)) == (1257, 180, 360)
    assert data.input_shape == (8, 8) and 0.0 <= data.x_train.min() <= data.x_train.max() <= 1.0
    both = np.concatenate([data.x_train, data.x_val, data.x_test]).reshape(1797, -1)
    assert len(np.unique(both, axis=0)) >= 1790  # disjoint rows (a few digits repeat exactly)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 500), frac=st.floats(0.05, 0.5), seed=st.integers(0, 99))
def test_random_split_partitions_the_rows(n, frac, seed):
    s = random_forget_split(n, frac, seed=seed)
    assert len(s.forget) == round(frac * n)
    np.testing.assert_array_equal(np.sort(np.concatenate([s.forget, s.retain])), np.arange(n))
    assert np.array_equal(random_forget_split(n, frac, seed=seed).forget, s.forget)


def test_class_split_and_subset():
    y = np.array([0, 1, 2, 1, 0, 1])
    s = class_forget_split(y, 1)
    assert s.forget.tolist() == [1, 3, 5] and s.retain.tolist() == [0, 2, 4]
    sub = s.subset([0])
    assert sub.forget.tolist() == [1] and sub.retain.tolist() == [0, 2, 4]


@pytest.mark.usefixtures("own_error_messages")
def test_bad_splits():
    with pytest.raises(ValueError, match="forget set is empty"):
        forget_split([], 10)
    with pytest.raises(ValueError, match="retain set is empty"):
        forget_split(list(range(10)), 10)
    with pytest.raises(ValueError, match="overlap on 2 rows"):
        forget_split([1, 2], 10, retain=[2, 1, 3])
    with pytest.raises(ValueError, match=r"in \[0, 10\), got out-of-range \[12\]"):
        forget_split([1, 12], 10)
    with pytest.raises(ValueError, match="out-of-range"):
        forget_split([-1], 10)
    with pytest.raises(ValueError, match="must be unique"):
        forget_split([1, 1], 10)
    with pytest.raises(TypeError, match="integer indices"):
        forget_split([0.5], 10)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        random_forget_split(10, 1.0, seed=0)
    with pytest.raises(ValueError, match="gives 0 forget rows"):
        random_forget_split(10, 0.01, seed=0)
    with pytest.raises(ValueError, match=r"classes \[7\] do not occur"):
        class_forget_split(np.array([0, 1]), 7)
    with pytest.raises(ValueError, match="split must be"):
        load_digits().split("holdout")
