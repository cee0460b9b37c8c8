"""Environment finding and delegation of FHE entry points (main env -> .venv-fhe), and the
layering of the package (imports go downwards only, Concrete is never imported by jaxtrust)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxtrust import fhe
from jaxtrust.fhe import delegation, environment, registry

FHE_DIR = Path(fhe.__file__).parent
# Layer of every module: a module may import only modules of a lower layer (or its own).
LAYERS = {
    "_backend": 0,
    "_messages": 0,
    "quantize": 0,
    "environment": 0,
    "registry": 0,
    "results": 0,
    "circuits": 1,
    "client": 2,
    "server": 2,
    "protocol": 3,
    "verbalizer": 3,
    "ckks": 3,
    "delegation": 4,
    "_worker": 5,
    "api": 5,
    "__init__": 6,
}


def _fhe_imports(path: Path) -> set[str]:
    """The jaxtrust.fhe modules a file imports, anywhere in it (module level or in functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "jaxtrust.fhe":
                names.update(a.name for a in node.names)
            elif node.module.startswith("jaxtrust.fhe."):
                names.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            names.update(
                a.name.split(".")[2] for a in node.names if a.name.startswith("jaxtrust.fhe.")
            )
    return names


@pytest.mark.smoke
def test_fhe_modules_import_only_lower_layers():
    files = sorted(FHE_DIR.glob("*.py"))
    assert {f.stem for f in files} <= set(LAYERS), {f.stem for f in files} - set(LAYERS)
    for path in files:
        for name in _fhe_imports(path):
            assert LAYERS[name] < LAYERS[path.stem], f"{path.name} imports {name} (upward)"


@pytest.mark.smoke
def test_every_listed_entry_point_module_exists_and_names_a_backend():
    for name, spec in registry.ENTRY_POINTS.items():
        assert (FHE_DIR / f"{spec.module.split('.')[-1]}.py").is_file(), name
        assert spec.backend in environment.BACKENDS, name
    with pytest.raises(KeyError, match="unknown FHE entry point"):
        registry.resolve("nope")
    with pytest.raises(KeyError, match="unknown FHE entry point"):
        delegation.call("nope", {}, {})


@pytest.mark.smoke
def test_importing_jaxtrust_and_its_fhe_package_never_imports_concrete_or_openfhe():
    code = (
        "import sys, jaxtrust, jaxtrust.fhe, jaxtrust.privacy.secpe\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('concrete', 'openfhe')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _fake_python(folder: Path) -> Path:
    python = folder / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    return python


@pytest.mark.smoke
def test_find_python_order_variables_then_folders(tmp_path, monkeypatch):
    for b in environment.BACKENDS.values():
        monkeypatch.delenv(b.python_var, raising=False)
        monkeypatch.delenv(b.venv_var, raising=False)
    project = tmp_path / "project"
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    found = _fake_python(project / ".venv-fhe")
    monkeypatch.chdir(deep)  # found in a parent of the working directory
    assert environment.find_python("fhe") == found
    venv = _fake_python(tmp_path / "elsewhere")
    monkeypatch.setenv("JAXTRUST_FHE_VENV", str(venv.parents[1]))
    assert environment.find_python("fhe") == venv
    explicit = tmp_path / "py"
    explicit.write_text("")
    monkeypatch.setenv("JAXTRUST_FHE_PYTHON", str(explicit))
    assert environment.find_python(fhe.FHE) == explicit


@pytest.mark.smoke
def test_find_python_errors_name_the_variables(tmp_path, monkeypatch):
    for b in environment.BACKENDS.values():
        monkeypatch.delenv(b.python_var, raising=False)
        monkeypatch.delenv(b.venv_var, raising=False)
    monkeypatch.chdir(tmp_path)
    # The running interpreter's project may hold a .venv-ckks; a fake backend never has one.
    nothing = environment.Backend("nothing", "no_such_module", "build it")
    with pytest.raises(fhe.EnvironmentNotFoundError) as err:
        environment.find_python(nothing)
    message = str(err.value)
    assert "JAXTRUST_NOTHING_PYTHON" in message and "JAXTRUST_NOTHING_VENV" in message
    assert ".venv-nothing" in message and "build it" in message
    assert environment.find_python(nothing, required=False) is None
    monkeypatch.setenv("JAXTRUST_FHE_PYTHON", str(tmp_path / "missing"))
    with pytest.raises(fhe.EnvironmentNotFoundError, match="JAXTRUST_FHE_PYTHON=.*not a file"):
        environment.find_python("fhe")
    monkeypatch.delenv("JAXTRUST_FHE_PYTHON")
    monkeypatch.setenv("JAXTRUST_FHE_VENV", str(tmp_path))
    with pytest.raises(fhe.EnvironmentNotFoundError, match="JAXTRUST_FHE_VENV"):
        environment.find_python("fhe")
    with pytest.raises(KeyError, match="unknown backend"):
        environment.find_python("bfv")
    status = environment.environment_status(nothing)
    assert status == {"in_process": False, "python": None, "delegation": False, "error": None}


def _delegation_possible() -> bool:
    status = environment.environment_status("fhe")
    return bool(status["delegation"])


@pytest.mark.slow
@pytest.mark.skipif(
    fhe.concrete_available() or not _delegation_possible(),
    reason="runs in the main environment with a findable .venv-fhe",
)
def test_delegated_call_runs_this_checkouts_code_and_passes_errors_back(tmp_path, monkeypatch):
    # The worker is started under the fhe interpreter from another directory, with the caller's
    # package linked in: its result must equal the in-caller quantized argmax.
    monkeypatch.setenv("JAXTRUST_FHE_PYTHON", str(environment.find_python("fhe")))
    monkeypatch.chdir(tmp_path)
    scores = np.random.default_rng(0).normal(size=(3, 2, 4))
    result = fhe.encrypted_ensemble_argmax(scores, bits=4, key_cache_dir=tmp_path / "keys")
    q, _ = fhe.quantize_scores(scores, 4)
    np.testing.assert_array_equal(result.argmax, np.argmax(q.sum(axis=1), axis=1))
    assert result.matches and result.stats["pbs"] == 7
    # A ValueError raised in the worker comes back as a ValueError that says where it came from.
    with pytest.raises(ValueError, match="raised in the fhe environment"):
        delegation.delegate(
            "argmax_grid",
            {},
            {
                "ks": [4],
                "bits": [9],
                "variants": ["tree"],
                "repeats": 1,
                "prompts": 3,
                "inputs": 1,
                "seed": 0,
            },
        )
    # The worker imported this checkout's jaxtrust, not the fhe environment's own copy.
    code = "import jaxtrust.fhe.registry as r; print(r.__file__)"
    env = delegation._child_env(_linkdir(tmp_path))
    out = subprocess.run(
        [str(environment.find_python("fhe")), "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert Path(out.stdout.strip()).resolve() == (FHE_DIR / "registry.py").resolve()


def _linkdir(tmp_path: Path) -> Path:
    path = tmp_path / "link"
    path.mkdir()
    return path


@pytest.mark.smoke
def test_jaxtrust_info_says_how_fhe_runs():
    from jaxtrust.cli import info

    backends = info()["backends"]
    here, delegated = backends["fhe (concrete)"], backends["fhe delegation"]
    assert isinstance(here, bool)
    status = environment.environment_status("fhe")
    assert here == status["in_process"]
    assert delegated == (status["python"] if status["delegation"] else False)
    if not here and os.environ.get("JAXTRUST_REQUIRE_FHE_DELEGATION"):
        assert delegated, "FHE delegation was required but is not available"
