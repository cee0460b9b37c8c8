"""Time series for forecasting and valuation: real series shipped in packages, generated series,
and sliding windows.

Real series are CSV files inside installed packages (``statsmodels``, ``vega_datasets``), read
through :func:`jaxtrust.data.assets.package_data_path` without importing the package, with
NumPy's CSV reader (no pickles, no network). Generated series follow KernelSynth (Ansari et al.,
"Chronos: Learning the Language of Time Series", 2024): sums and products of Gaussian-process
kernels, plus seasonal + trend and AR(p) processes.

Example:
  >>> x = synthetic_series("seasonal", 200, seed=0)
  >>> x.shape, bool(np.isfinite(x).all())
  ((200,), True)
  >>> sliding_windows(np.arange(10.0), 4, stride=3).shape
  (3, 4)
"""

# ruff: noqa: F722
from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np
from jaxtyping import Float

from jaxtrust.data.assets import package_data_path

__all__ = [
    "REAL_SERIES",
    "SYNTHETIC_KINDS",
    "RealSeries",
    "load_series",
    "real_series_available",
    "seasonal_period",
    "sliding_windows",
    "synthetic_series",
]


class RealSeries(NamedTuple):
    """Where one real series lives: ``package/relative`` CSV, its value column, its season.

    Attributes:
      package: top-level import name of the package holding the CSV.
      relative: the CSV's path inside the package.
      column: the value column (name), or ``"*months"`` for a year-by-month table read row-wise.
      period: the seasonal period (1 when there is none), for seasonal-naive and MASE.
      pip: the install command.
    """

    package: str
    relative: str
    column: str
    period: int
    pip: str


_SM = "pip install statsmodels"
_VEGA = "pip install vega_datasets"
REAL_SERIES: dict[str, RealSeries] = {
    "co2": RealSeries("statsmodels", "datasets/co2/co2.csv", "co2", 52, _SM),
    "sunspots": RealSeries("statsmodels", "datasets/sunspots/sunspots.csv", "SUNACTIVITY", 11, _SM),
    "elnino": RealSeries("statsmodels", "datasets/elnino/elnino.csv", "*months", 12, _SM),
    "nile": RealSeries("statsmodels", "datasets/nile/nile.csv", "volume", 1, _SM),
    "elec_equip": RealSeries(
        "statsmodels", "datasets/elec_equip/elec_equip.csv", "STS.M.I7.W.TOVT.NS0016.4.000", 12, _SM
    ),
    "realgdp": RealSeries("statsmodels", "datasets/macrodata/macrodata.csv", "realgdp", 4, _SM),
    "cpi": RealSeries("statsmodels", "datasets/macrodata/macrodata.csv", "cpi", 4, _SM),
    "unemp": RealSeries("statsmodels", "datasets/macrodata/macrodata.csv", "unemp", 4, _SM),
    "seattle_temps": RealSeries("vega_datasets", "_data/seattle-temps.csv", "temp", 24, _VEGA),
    "sf_temps": RealSeries("vega_datasets", "_data/sf-temps.csv", "temp", 24, _VEGA),
    "us_employment": RealSeries("vega_datasets", "_data/us-employment.csv", "nonfarm", 12, _VEGA),
}


def _read_csv(path: Path, column: str) -> np.ndarray:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [h.strip().strip('"') for h in rows[0]]
    body = rows[1:]
    if column == "*months":
        # Year-by-month table: the series is the rows read left to right, oldest first.
        values = [v for row in body for v in row[1:13]]
    else:
        values = [row[header.index(column)] for row in body]
    return np.array([float(v) if v.strip() not in ("", "NA", "nan") else np.nan for v in values])


def _interpolate(x: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.arange(len(x))
        x = x.copy()
        x[bad] = np.interp(idx[bad], idx[~bad], x[~bad])
    return x


def load_series(name: str) -> Float[np.ndarray, " time"]:
    """One real series as float64 NumPy, gaps linearly interpolated.

    Args:
      name: a key of :data:`REAL_SERIES` (co2 weekly, sunspots yearly, elnino monthly, Nile
        yearly, elec_equip monthly, macrodata quarterly columns, Seattle/SF hourly
        temperatures 2010, US non-farm employment monthly).

    Returns:
      ``[time]`` values, oldest first.

    Raises:
      KeyError: unknown name. ModuleNotFoundError: the package is not installed.

    Example::

      co2 = load_series("co2")   # 2284 weekly CO2 readings, Mauna Loa 1958-2001
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in REAL_SERIES:
        raise KeyError(f"unknown series {name!r}; known: {sorted(REAL_SERIES)}")
    spec = REAL_SERIES[name]
    path = package_data_path(spec.package, spec.relative, pip=spec.pip)
    return _interpolate(_read_csv(path, spec.column))


def real_series_available(name: str) -> bool:
    """Whether :func:`load_series` would find ``name`` (for presets and skipped tests)."""
    if name not in REAL_SERIES:
        raise KeyError(f"unknown series {name!r}; known: {sorted(REAL_SERIES)}")
    spec = REAL_SERIES[name]
    try:
        package_data_path(spec.package, spec.relative, pip=spec.pip)
    except (ModuleNotFoundError, FileNotFoundError):
        return False
    return True


def seasonal_period(name: str) -> int:
    """The seasonal period of a real series (1: none)."""
    if name not in REAL_SERIES:
        raise KeyError(f"unknown series {name!r}; known: {sorted(REAL_SERIES)}")
    return REAL_SERIES[name].period


SYNTHETIC_KINDS = ("seasonal", "ar", "gp", "trend")


def _gp_kernel(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    def one():
        kind = rng.choice(["rbf", "periodic", "linear", "white", "rq"])
        d = t[:, None] - t[None, :]
        if kind == "rbf":
            ell = rng.uniform(0.02, 0.3)
            return np.exp(-0.5 * (d / ell) ** 2)
        if kind == "periodic":
            period = rng.choice([24, 12, 7, 52, 4, 30]) / len(t) * rng.uniform(0.8, 1.2)
            return np.exp(-2.0 * np.sin(np.pi * np.abs(d) / period) ** 2 / 0.5)
        if kind == "linear":
            return 0.5 + (t[:, None] - 0.5) * (t[None, :] - 0.5)
        if kind == "rq":
            ell, a = rng.uniform(0.05, 0.3), rng.uniform(0.5, 2)
            return (1 + d**2 / (2 * a * ell**2)) ** (-a)
        return 0.05 * np.eye(len(t))

    k = one()
    for _ in range(rng.integers(0, 3)):
        k = k + one() if rng.random() < 0.5 else k * one()
    return k


def synthetic_series(kind: str, length: int, *, seed: int) -> Float[np.ndarray, " time"]:
    r"""One generated series.

    * ``seasonal``: :math:`a\sin(2\pi t/P + \phi) + b\sin(4\pi t/P) + c t + \epsilon`, P drawn
      from common periods (4, 7, 12, 24, 52).
    * ``trend``: a piecewise-linear trend with one change point, plus noise.
    * ``ar``: a stationary AR(p), :math:`x_t = \sum_{i \le p} \phi_i x_{t-i} + \epsilon_t`,
      p in 1..3 with roots outside the unit circle.
    * ``gp``: KernelSynth, one draw of a GP whose kernel is a random sum/product of RBF,
      periodic, linear, rational-quadratic and white kernels (drawn on at most 256 grid points,
      interpolated).

    Args:
      kind: one of :data:`SYNTHETIC_KINDS`.
      length: number of points (>= 2).
      seed: host-side seed.

    Returns:
      ``[length]`` float64 values.

    Example:
      >>> synthetic_series("ar", 50, seed=1).shape
      (50,)
    """
    if kind not in SYNTHETIC_KINDS:
        raise KeyError(f"unknown kind {kind!r}; known: {SYNTHETIC_KINDS}")
    if not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    if kind == "seasonal":
        period = float(rng.choice([4, 7, 12, 24, 52])) * rng.uniform(0.95, 1.05)
        phase = rng.uniform(0, 2 * np.pi)
        x = rng.uniform(0.5, 2) * np.sin(2 * np.pi * t / period + phase)
        x += rng.uniform(0, 0.7) * np.sin(4 * np.pi * t / period + 2 * phase)
        x += rng.normal(0, 0.01) * t + rng.uniform(0.02, 0.3) * rng.standard_normal(length)
        return x + rng.normal(0, 3)
    if kind == "trend":
        cp = rng.integers(length // 4, max(length // 4 + 1, 3 * length // 4))
        s1, s2 = rng.normal(0, 0.05, size=2)
        x = np.where(t < cp, s1 * t, s1 * cp + s2 * (t - cp))
        return x + rng.uniform(0.05, 0.5) * rng.standard_normal(length) + rng.normal(0, 3)
    if kind == "ar":
        p = int(rng.integers(1, 4))
        roots = rng.uniform(1.2, 3.0, size=p) * rng.choice([-1, 1], size=p)
        phi = -np.poly(1.0 / roots)[1:]  # monic polynomial with roots 1/r: x_t = sum phi_i x_{t-i}
        x = np.zeros(length + 50)
        eps = rng.standard_normal(length + 50)
        for i in range(p, length + 50):
            x[i] = phi @ x[i - p : i][::-1] + eps[i]
        return x[50:]
    # gp: draw on a grid of at most 256 points and interpolate, to bound the O(n^3) Cholesky.
    n = min(length, 256)
    grid = np.linspace(0, 1, n)
    k = _gp_kernel(grid, rng)
    chol = np.linalg.cholesky(k + (1e-4 * np.mean(np.diag(k)) + 1e-6) * np.eye(n))
    draw = chol @ rng.standard_normal(n)
    return np.interp(np.linspace(0, 1, length), grid, draw)


def sliding_windows(
    series: Float[np.ndarray, " time"], length: int, *, stride: int = 1
) -> Float[np.ndarray, "windows length"]:
    """Overlapping windows ``series[i*stride : i*stride + length]`` (a copy).

    Args:
      series: ``[time]`` finite values.
      length: window length (>= 1, <= len(series)).
      stride: step between window starts (>= 1).

    Returns:
      ``[windows, length]`` with ``windows = (time - length) // stride + 1``.

    Raises:
      ValueError: NaNs in ``series``, or a window longer than the series.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"series must be 1-D [time], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("series contains NaN or Inf; interpolate or drop them first")
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    if length > len(x):
        raise ValueError(f"window length {length} is longer than the series ({len(x)} points)")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    starts = np.arange(0, len(x) - length + 1, stride)
    return np.stack([x[s : s + length] for s in starts])
