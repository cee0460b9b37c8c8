# ruff: noqa: F722
"""A real English/technical text corpus that ships with Python, and a byte-level tokenizer.

The Python standard library carries about 1.4 M characters of prose: the pydoc topic pages
(``pydoc_data.topics``, the language reference sections ``help()`` shows) and the docstrings
of the public modules, classes and functions. :func:`stdlib_documents` reads them at run time
from the installed interpreter (nothing is downloaded or vendored), in a fixed order, so the
corpus is deterministic for one Python version (:func:`corpus_fingerprint` names it).
:func:`passages` cuts documents into fixed-length, de-duplicated byte passages — the unit that
memorization studies plant, duplicate and try to extract.

:class:`ByteTokenizer` maps UTF-8 bytes to ids ``5..260`` after the five special tokens of
:mod:`jaxtrust.data.vocab`, so any text is encodable and a model trained on one Python's
corpus reads another's.

Example:
  >>> tok = ByteTokenizer()
  >>> ids = tok.encode("def f():")
  >>> tok.decode(ids)
  'def f():'
  >>> tok.vocab_size
  261
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import json
import os
import sys
import warnings
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import NamedTuple

from jaxtyping import ArrayLike, Int

from jaxtrust.data.vocab import SPECIAL_TOKENS

__all__ = [
    "DEFAULT_MODULES",
    "ByteTokenizer",
    "Document",
    "corpus_fingerprint",
    "passages",
    "stdlib_documents",
]

# Pure-Python, import-safe, documentation-rich modules (no GUI, no side effects on import).
DEFAULT_MODULES: tuple[str, ...] = (
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs",
    "collections", "concurrent.futures", "configparser", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fileinput",
    "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip",
    "hashlib", "heapq", "hmac", "html", "http.client", "http.server", "imaplib",
    "importlib", "inspect", "io", "ipaddress", "itertools", "json", "logging", "lzma",
    "mailbox", "math", "mimetypes", "multiprocessing", "netrc", "numbers", "operator",
    "optparse", "os", "pathlib", "pickle", "pkgutil", "platform", "plistlib", "poplib",
    "pprint", "queue", "quopri", "random", "re", "reprlib", "sched", "secrets",
    "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket",
    "socketserver", "sqlite3", "ssl", "statistics", "string", "struct", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "timeit", "token", "tokenize",
    "trace", "traceback", "types", "typing", "unittest", "urllib.parse",
    "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zipimport",
)  # fmt: skip


class Document(NamedTuple):
    """One corpus document: a stable name (``topic:NAME`` or ``doc:module.qualname``), text."""

    name: str
    text: str


class ByteTokenizer:
    """UTF-8 byte tokenizer: ids 0..4 are ``<pad> <bos> <eos> <sep> <unk>``, byte ``b`` is ``5+b``.

    It has the attributes every jaxtrust LM helper reads (``vocab_size``, ``pad_id``,
    ``bos_id``, ``eos_id``), so :meth:`jaxtrust.models.LMConfig.for_tokenizer` builds a model
    for it. Decoding replaces invalid UTF-8 (a cut multi-byte character) with U+FFFD.

    Example:
      >>> tok = ByteTokenizer()
      >>> tok.encode("ab")
      [102, 103]
      >>> tok.decode([1, 102, 103, 2, 104])
      'ab'
    """

    pad_id, bos_id, eos_id, sep_id, unk_id = 0, 1, 2, 3, 4
    offset = len(SPECIAL_TOKENS)
    vocab_size = len(SPECIAL_TOKENS) + 256

    def encode(self, text: str) -> list[int]:
        """Ids of the UTF-8 bytes of ``text``.

        Raises:
          TypeError: ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return [self.offset + b for b in text.encode("utf-8")]

    def decode(
        self,
        ids: Sequence[int] | Int[ArrayLike, " n"],
        *,
        stop_at_eos: bool = True,
        skip_special: bool = True,
    ) -> str:
        """Text of ``ids`` (special tokens skipped; stops at ``<eos>`` unless told not to).

        Raises:
          ValueError: an id outside ``[0, vocab_size)``.
        """
        out = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
            if stop_at_eos and i == self.eos_id:
                break
            if i < self.offset:
                if not skip_special:
                    out += SPECIAL_TOKENS[i].encode()
                continue
            out.append(i - self.offset)
        return out.decode("utf-8", errors="replace")

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer's (parameter-free) description as JSON."""
        Path(path).write_text(json.dumps({"type": "byte", "special": list(SPECIAL_TOKENS)}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ByteTokenizer:
        """Read a :meth:`save` file.

        Raises:
          ValueError: the file is not a jaxtrust byte tokenizer.
        """
        data = json.loads(Path(path).read_text())
        if data.get("type") != "byte" or tuple(data.get("special", ())) != SPECIAL_TOKENS:
            raise ValueError(f"{path} is not a jaxtrust byte tokenizer file")
        return cls()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteTokenizer)

    def __hash__(self) -> int:
        return hash("jaxtrust.ByteTokenizer")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def _clean(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return "\n".join(lines)


def _module_docs(name: str, min_chars: int, seen: set[str]) -> list[Document]:
    try:
        # Some modules print or warn on import (deprecations); none of that is corpus text.
        with (
            warnings.catch_warnings(),
            redirect_stdout(io.StringIO()),
            redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a module missing from this build is simply skipped
        return []
    docs: list[Document] = []

    def add(qualname: str, obj) -> None:
        doc = inspect.getdoc(obj)
        if not doc or len(doc) < min_chars:
            return
        text = _clean(doc)
        if text not in seen:  # inherited or shared docstrings are kept once
            seen.add(text)
            docs.append(Document(f"doc:{name}.{qualname}" if qualname else f"doc:{name}", text))

    add("", module)
    public = getattr(module, "__all__", None)
    names = sorted(public) if isinstance(public, list | tuple) else sorted(vars(module))
    for attr in names:
        if attr.startswith("_"):
            continue
        obj = getattr(module, attr, None)
        if getattr(obj, "__module__", None) not in (name, None) and not inspect.ismodule(obj):
            continue  # re-exported from elsewhere: counted once, where it is defined
        if inspect.isclass(obj):
            add(attr, obj)
            for meth in sorted(vars(obj)):
                if not meth.startswith("_"):
                    add(f"{attr}.{meth}", getattr(obj, meth, None))
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            add(attr, obj)
    return docs


def stdlib_documents(
    *,
    topics: bool = True,
    modules: Sequence[str] = DEFAULT_MODULES,
    min_chars: int = 80,
) -> list[Document]:
    """The standard library's pydoc topics and docstrings, read from this interpreter.

    Topics come first (sorted by name), then each module of ``modules`` in order: its own
    docstring, then its public classes (and their public methods) and functions, sorted by
    name. Docstrings are normalised by :func:`inspect.getdoc` (indentation removed) and
    trailing spaces stripped; documents shorter than ``min_chars`` characters and docstrings
    shared by several objects (inherited ones) are kept once or not at all.

    Args:
      topics: include ``pydoc_data.topics`` (about 465 k characters on CPython 3.11).
      modules: importable standard-library module names.
      min_chars: drop documents shorter than this.

    Returns:
      ``list[Document]`` in a deterministic order.

    Raises:
      ValueError: ``min_chars`` is negative or nothing was read.

    Example:
      >>> docs = stdlib_documents(topics=False, modules=("textwrap",))
      >>> docs[0].name
      'doc:textwrap'

    Reference: the corpus of the memorization setting in Wu et al., *MemHunter: Automated and
    Verifiable Memorization Detection at Dataset-scale in LLMs* (2024) is web text; this is
    the offline, same-distribution stand-in.
    """
    if not isinstance(min_chars, int) or min_chars < 0:
        raise ValueError(f"min_chars must be a non-negative int, got {min_chars!r}")
    if isinstance(modules, str):
        raise TypeError("modules must be a sequence of module names, not one string")
    docs: list[Document] = []
    if topics:
        from pydoc_data.topics import topics as table

        for name in sorted(table):
            text = _clean(table[name])
            if len(text) >= min_chars:
                docs.append(Document(f"topic:{name}", text))
    seen: set[str] = set()
    for name in modules:
        docs.extend(_module_docs(name, min_chars, seen))
    if not docs:
        raise ValueError("no documents were read (topics=False and no importable modules)")
    return docs


def corpus_fingerprint(docs: Sequence[Document]) -> str:
    """SHA-256 (first 16 hex digits) of the documents and the Python version that wrote them.

    A cache key for anything built from the corpus: another interpreter's docstrings differ.
    """
    h = hashlib.sha256(sys.version.split()[0].encode())
    for doc in docs:
        h.update(doc.name.encode() + b"\0" + doc.text.encode() + b"\0")
    return h.hexdigest()[:16]


def passages(
    docs: Sequence[Document], length: int, *, stride: int | None = None, min_fill: float = 1.0
) -> list[str]:
    """Fixed-length UTF-8 byte passages of every document, de-duplicated, in corpus order.

    Each document's bytes are cut at ``0, stride, 2 * stride, ...`` into windows of
    ``length`` bytes (a window that would end past the document is dropped unless it holds
    at least ``min_fill * length`` bytes); windows are decoded back to text (a multi-byte
    character cut at an edge becomes U+FFFD, so a passage may differ from its bytes there) and
    exact duplicates are dropped, keeping the first.

    Args:
      docs: documents from :func:`stdlib_documents`.
      length: passage length in bytes (>= 8).
      stride: step between window starts (default ``length``: non-overlapping).
      min_fill: the shortest kept tail window, as a fraction of ``length``.

    Returns:
      ``list[str]`` of passages.

    Raises:
      ValueError: bad ``length``, ``stride`` or ``min_fill``, or no passage fits.

    Example:
      >>> passages([Document("a", "abcdefghij" * 3)], 8)
      ['abcdefgh', 'ijabcdef', 'ghijabcd']
    """
    if not isinstance(length, int) or length < 8:
        raise ValueError(f"length must be an int >= 8, got {length!r}")
    stride = length if stride is None else stride
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if not 0.0 < min_fill <= 1.0:
        raise ValueError(f"min_fill must be in (0, 1], got {min_fill!r}")
    out: list[str] = []
    seen: set[str] = set()
    for doc in docs:
        data = doc.text.encode("utf-8")
        for start in range(0, len(data), stride):
            window = data[start : start + length]
            if len(window) < min_fill * length:
                break
            text = window.decode("utf-8", errors="replace")
            if text not in seen:
                seen.add(text)
                out.append(text)
    if not out:
        raise ValueError(f"no passage of {length} bytes fits in the {len(docs)} documents")
    return out
