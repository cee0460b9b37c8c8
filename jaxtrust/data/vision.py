# ruff: noqa: F722
"""Small real classification sets that ship in packages, as plain arrays with fixed splits, and
the forget/retain splits of the unlearning literature.

* :func:`load_mnist1d` — MNIST-1D (Greydanus & Kobak, *Scaling Down Deep Learning with
  MNIST-1D*, ICML 2024): 5000 length-40 signals of 10 classes, **generated offline** by
  ``mnist1d.data.make_dataset`` from its hard-coded templates (never its download path). The
  package's own 4000 / 1000 train/test split is kept; the 1000 test signals are cut into fixed
  halves, ``val`` (for tuning) and ``test`` (for reporting).
* :func:`load_digits` — scikit-learn's 1797 handwritten 8x8 digits, scaled to ``[0, 1]``, split
  by a fixed permutation into 1257 train / 180 val / 360 test. Easy: a smoke test more than a
  benchmark.
* :func:`random_forget_split`, :func:`class_forget_split`, :func:`forget_split` — forget and
  retain index sets over the training rows (random 10 % forgetting, class-wise forgetting, or
  given indices), validated: empty or overlapping sets, repeated or out-of-range indices raise.

Example:
  >>> data = load_digits()
  >>> data.x_train.shape, data.num_classes
  ((1257, 8, 8), 10)
  >>> split = random_forget_split(data.num_train, 0.1, seed=0)
  >>> len(split.forget), len(split.retain)
  (126, 1131)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float, Int

__all__ = [
    "ClassificationData",
    "ForgetSplit",
    "class_forget_split",
    "forget_split",
    "load_digits",
    "load_mnist1d",
    "random_forget_split",
]


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    """A classification set with fixed ``train`` / ``val`` / ``test`` splits (NumPy arrays).

    Attributes:
      name: ``"mnist1d"`` or ``"digits"``.
      x_train, y_train: training inputs ``[n, *input_shape]`` (float32) and int32 labels.
      x_val, y_val: validation split (hyper-parameter tuning).
      x_test, y_test: test split (reporting).
      num_classes: number of labels.
    """

    name: str
    x_train: Float[np.ndarray, "n ..."]
    y_train: Int[np.ndarray, " n"]
    x_val: Float[np.ndarray, "nv ..."]
    y_val: Int[np.ndarray, " nv"]
    x_test: Float[np.ndarray, "nt ..."]
    y_test: Int[np.ndarray, " nt"]
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (``(40,)`` for mnist1d, ``(8, 8)`` for digits)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    def split(self, name: str) -> dict[str, np.ndarray]:
        """``{"x", "y"}`` of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return {"x": getattr(self, f"x_{name}"), "y": getattr(self, f"y_{name}")}

    def rows(self, indices: Int[np.ndarray, " k"]) -> dict[str, np.ndarray]:
        """``{"x", "y"}`` of the training rows ``indices``."""
        idx = np.asarray(indices)
        return {"x": self.x_train[idx], "y": self.y_train[idx]}


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(num_samples: int, seed: int) -> tuple[np.ndarray, ...]:
    import random

    # mnist1d seeds NumPy's and Python's global generators (on import and in make_dataset);
    # keep the caller's streams.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        try:
            import mnist1d.data as m1d
        except ImportError as err:  # optional dependency of the data module
            raise ImportError(
                "load_mnist1d needs the mnist1d package: pip install mnist1d"
            ) from err
        args = m1d.get_dataset_args()
        args.num_samples = num_samples
        args.seed = seed
        raw = m1d.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return (
        raw["x"].astype(np.float32),
        raw["y"].astype(np.int32),
        raw["x_test"].astype(np.float32),
        raw["y_test"].astype(np.int32),
    )


def load_mnist1d(*, num_samples: int = 5000, seed: int = 42) -> ClassificationData:
    """MNIST-1D generated offline (the package's defaults give the standard 4000/1000 set).

    Args:
      num_samples: signals generated (80 % train, the rest split into val/test halves).
      seed: the generator's seed (42 is the published data set).

    Returns:
      A :class:`ClassificationData` with inputs ``[n, 40]``.
    """
    if not isinstance(num_samples, int) or num_samples < 20:
        raise ValueError(f"num_samples must be an int >= 20, got {num_samples!r}")
    x, y, xt, yt = _mnist1d_arrays(num_samples, seed)
    half = len(yt) // 2
    return ClassificationData(
        "mnist1d", x.copy(), y.copy(), xt[:half], yt[:half], xt[half:], yt[half:], 10
    )


def load_digits() -> ClassificationData:
    """scikit-learn's handwritten digits, 8x8 in ``[0, 1]``, fixed 1257 / 180 / 360 split."""
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as err:
        raise ImportError("load_digits needs scikit-learn: pip install scikit-learn") from err
    raw = _sk_digits()
    x = (raw.images / 16.0).astype(np.float32)
    y = raw.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))
    test, val, train = order[:360], order[360:540], order[540:]
    return ClassificationData("digits", x[train], y[train], x[val], y[val], x[test], y[test], 10)


@dataclasses.dataclass(frozen=True)
class ForgetSplit:
    """Disjoint forget and retain row indices over a training set of ``n`` rows.

    Attributes:
      forget: sorted int64 indices of the rows to unlearn (non-empty).
      retain: sorted int64 indices of the rows to keep (non-empty).
      n: size of the training set the indices refer to.
    """

    forget: Int[np.ndarray, " nf"]
    retain: Int[np.ndarray, " nr"]
    n: int

    def __post_init__(self):
        if not isinstance(self.n, int | np.integer) or self.n < 2:
            raise ValueError(f"n must be an int >= 2, got {self.n!r}")
        for name in ("forget", "retain"):
            idx = np.asarray(getattr(self, name))
            if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
                raise TypeError(f"{name} must be a 1-D integer index array, got {idx.dtype}")
            if idx.size == 0:
                raise ValueError(f"{name} set is empty: unlearning needs at least one {name} row")
            if idx.min() < 0 or idx.max() >= self.n:
                bad = idx[(idx < 0) | (idx >= self.n)]
                raise ValueError(
                    f"{name} indices must be in [0, {self.n}), got out-of-range {bad[:5].tolist()}"
                )
            if np.unique(idx).size != idx.size:
                raise ValueError(f"{name} indices must be unique")
            object.__setattr__(self, name, np.sort(idx.astype(np.int64)))
        both = np.intersect1d(self.forget, self.retain)
        if both.size:
            raise ValueError(
                f"forget and retain sets overlap on {both.size} rows (first {both[:5].tolist()})"
            )

    def subset(self, positions: Sequence[int] | Int[np.ndarray, " k"]) -> ForgetSplit:
        """The split that forgets only ``forget[positions]``; the rest of the old forget set is
        neither forgotten nor retained (it is excluded, as in sequential unlearning)."""
        return ForgetSplit(self.forget[np.asarray(positions)], self.retain, self.n)


def forget_split(
    forget: Sequence[int] | np.ndarray, n: int, *, retain: Sequence[int] | np.ndarray | None = None
) -> ForgetSplit:
    """A :class:`ForgetSplit` from given forget indices (retain: the complement, or given).

    Raises:
      ValueError: empty or overlapping sets, repeated or out-of-range indices.
    """
    f = np.asarray(forget)
    if f.size == 0:
        f = f.astype(np.int64)
    if not np.issubdtype(f.dtype, np.integer):
        raise TypeError(f"forget must be integer indices, got dtype {f.dtype}")
    if retain is None:
        keep = np.ones(n, bool)
        keep[f[(f >= 0) & (f < n)]] = False
        r = np.flatnonzero(keep)
    else:
        r = np.asarray(retain)
    return ForgetSplit(f, r, n)


def random_forget_split(n: int, fraction: float, *, seed: int) -> ForgetSplit:
    """Forget a uniformly random ``round(fraction * n)`` rows (the literature's random 10 %).

    Raises:
      ValueError: ``fraction`` outside (0, 1) or a forget set that rounds to 0 or ``n`` rows.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    k = int(round(fraction * n))
    if k < 1 or k >= n:
        raise ValueError(f"fraction={fraction} of n={n} rows gives {k} forget rows")
    forget = np.random.default_rng(seed).choice(n, size=k, replace=False)
    return forget_split(forget, n)


def class_forget_split(labels: Int[np.ndarray, " n"], classes: int | Sequence[int]) -> ForgetSplit:
    """Forget every training row whose label is in ``classes`` (class-wise forgetting).

    Raises:
      ValueError: a class absent from ``labels``, or every row forgotten.
    """
    y = np.asarray(labels)
    wanted = np.atleast_1d(np.asarray(classes))
    missing = [int(c) for c in wanted if not np.any(y == c)]
    if missing:
        raise ValueError(f"classes {missing} do not occur in labels")
    return forget_split(np.flatnonzero(np.isin(y, wanted)), len(y))
