"""The deployment: client and server in separate processes, Concrete's own serialization, a
server that never holds a secret key, and clear errors for foreign keys, bad inputs and missing
keys (fhe env; k=4, m=3, 4 bits)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

M, K, BITS = 3, 4, 4
# The server side, run as its own process: it reads only the files named on its command line.
SERVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from jaxtrust.fhe.server import ArgmaxServer, build_deployment
    step, folder = sys.argv[1], Path(sys.argv[2])
    if step == "build":
        build_deployment(folder / "deploy", prompts=3, classes=4, bits=4)
        (folder / "specs.bin").write_bytes(ArgmaxServer.load(folder / "deploy").client_specs())
    else:
        server = ArgmaxServer.load(folder / "deploy")
        server.set_evaluation_keys((folder / "evaluation_keys.bin").read_bytes())
        report = {"loaded": sorted(p.name for p in folder.iterdir()), "outputs": 0}
        for path in sorted(folder.glob("input-*.bin")):
            out = server.run(path.read_bytes())
            (folder / path.name.replace("input", "output")).write_bytes(out)
            report["outputs"] += 1
        report["attributes"] = sorted(vars(server))
        (folder / "server-report.json").write_text(json.dumps(report))
    """
)


def _server(step: str, folder: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SERVER, step, str(folder)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    _server("build", folder)
    return folder


def _inputs(seed: int, count: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.integers(0, (2**BITS - 1) // M + 1, size=(count, M, K))
    q[0] = 1  # all tied: class 0
    q[1, :, 1] = q[1, :, 3] = 5  # classes 1 and 3 tied at the top: class 1
    return q


@pytest.mark.fhe
@pytest.mark.slow
def test_client_and_server_in_separate_processes_match_numpy(deployment, tmp_path):
    from jaxtrust.fhe.client import ArgmaxClient

    client = ArgmaxClient((deployment / "specs.bin").read_bytes()).generate_keys()
    (deployment / "evaluation_keys.bin").write_bytes(client.evaluation_keys())
    q = _inputs(0)
    for i, x in enumerate(q):
        (deployment / f"input-{i}.bin").write_bytes(client.encrypt(x))
    _server("run", deployment)
    got = [client.decrypt((deployment / f"output-{i}.bin").read_bytes()) for i in range(len(q))]
    np.testing.assert_array_equal(got, np.argmax(q.sum(axis=1), axis=1))
    report = json.loads((deployment / "server-report.json").read_text())
    assert report["outputs"] == len(q)
    # What the server process was given: the deployment, the evaluation keys and ciphertexts.
    given = {n for n in report["loaded"] if not n.startswith(("input-", "output-"))}
    assert given <= {"deploy", "specs.bin", "evaluation_keys.bin", "server-report.json"}
    # The public evaluation keys are much smaller than the client's whole key set (which holds
    # the secret key); the server keeps no attribute that could hold a secret key or a client.
    whole = client._client.keys.serialize()
    assert len((deployment / "evaluation_keys.bin").read_bytes()) < len(whole)
    assert not {"_client", "keys", "secret_key"} & set(report["attributes"])


@pytest.mark.fhe
@pytest.mark.slow
def test_foreign_keys_bad_inputs_and_missing_keys_fail_clearly(deployment, own_error_messages):
    from jaxtrust.fhe.client import ArgmaxClient
    from jaxtrust.fhe.server import ArgmaxServer, build_deployment

    specs = (deployment / "specs.bin").read_bytes()
    alice = ArgmaxClient(specs)
    with pytest.raises(KeyError, match="generate_keys"):
        alice.encrypt(np.zeros((M, K), np.int64))
    alice.generate_keys()
    mallory = ArgmaxClient(specs).generate_keys()
    server = ArgmaxServer.load(deployment / "deploy")
    with pytest.raises(KeyError, match="no evaluation keys"):
        server.run(alice.encrypt(np.zeros((M, K), np.int64)))
    server.set_evaluation_keys(alice.evaluation_keys())
    # A ciphertext under another key set is refused, not answered with garbage.
    with pytest.raises(ValueError, match="key set"):
        server.run(mallory.encrypt(np.ones((M, K), np.int64)))
    out = server.run(alice.encrypt(np.ones((M, K), np.int64)))
    with pytest.raises(ValueError, match="key set"):
        mallory.decrypt(out)
    assert alice.decrypt(out) == 0
    # Scores out of range, and k that does not match the circuit.
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        alice.encrypt(np.full((M, K), 6, np.int64))
    with pytest.raises(ValueError, match="k=4"):
        alice.encrypt(np.zeros((M, K + 1), np.int64))
    with pytest.raises(TypeError, match="integers"):
        alice.encrypt(np.zeros((M, K)))
    # Keys made for another circuit (k = 2) are refused by this server.
    other = build_deployment(deployment / "other", prompts=M, classes=2, bits=BITS)
    stranger = ArgmaxClient(ArgmaxServer.load(other).client_specs()).generate_keys()
    with pytest.raises(ValueError, match="circuit"):
        server.set_evaluation_keys(stranger.evaluation_keys())
    with pytest.raises(ValueError, match="not a jaxtrust FHE message"):
        server.run(b"garbage")
    with pytest.raises(FileNotFoundError, match="build_deployment"):
        ArgmaxServer.load(deployment / "nowhere")
