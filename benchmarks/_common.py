"""Shared helpers for benchmark scripts: a machine/date/version header, Markdown tables, and
appending a section to ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = "# jaxtrust benchmark results\n"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(
    names: Sequence[str] = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers"),
) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def machine_header() -> str:
    """One paragraph: date (UTC), host CPU, usable cores, load, Python and library versions."""
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count()
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        load = "n/a"
    devices = ""
    try:
        import jax

        devices = f"; jax backend {jax.default_backend()} ({jax.devices()[0].device_kind})"
    except Exception:  # pragma: no cover
        pass
    return (
        f"- date: {now}\n"
        f"- machine: {cpu_model()}, {cores} usable cores, load average {load}{devices}\n"
        f"- python {platform.python_version()}; {versions()}\n"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(x: object) -> str:
        if isinstance(x, float):
            return f"{x:.4g}"
        return str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def append_results(title: str, command: str, body: str, notes: str = "") -> None:
    """Append ``## title`` with the machine header, the command, ``body`` and notes."""
    if not RESULTS.exists():
        RESULTS.write_text(TITLE)
    section = f"\n## {title}\n\n{machine_header()}- command: `{command}`\n\n{body}"
    if notes:
        section += f"\n{notes.strip()}\n"
    with RESULTS.open("a") as f:
        f.write(section)


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """Best wall time (s) of ``repeats`` calls of ``fn`` and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
