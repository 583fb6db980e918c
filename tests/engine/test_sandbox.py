"""The evaluation child: limits, crashes, confinement (B9), bundle checks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import TensorProto, helper

from engine import sandbox
from engine.bundle import sha256_file
from engine.sandbox import EvaluationFailure, evaluate_bundle, run_isolated
from tests.engine.test_evaluate import (
    build_lm_bundle,
    build_tabular_bundle,
    read_suite_records,
)

# Targets are stdlib or engine functions named as "module:function", so the
# child imports nothing from the test suite and starts quickly.


def test_child_environment_has_no_secrets(monkeypatch):
    monkeypatch.setenv("CIVITAS_TEST_SECRET", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db/civitas")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    seen = run_isolated("engine.sandbox:child_report", threads=2)
    env = seen["env"]
    assert "CIVITAS_TEST_SECRET" not in env
    assert "DATABASE_URL" not in env
    assert "hunter2" not in " ".join(env.values())
    assert env["HOME"] == seen["cwd"] == env["TMPDIR"]
    assert env["OMP_NUM_THREADS"] == "2"
    allowed = set(sandbox.scrubbed_env("/tmp", 2))
    leaked = [k for k in os.environ if k in env and k not in allowed]
    # Libraries may set variables of their own at import (OpenMP's KMP_*), but
    # nothing else of the parent's passes unless the sandbox put it there.
    assert [k for k in leaked if not k.startswith("KMP_")] == []
    assert seen["rlimit_as"] == sandbox.DEFAULT_MEMORY_BYTES
    assert seen["rlimit_core"] == 0
    assert seen["pgid_is_own"]


def test_memory_limit_gives_resource_limit():
    with pytest.raises(EvaluationFailure) as info:
        run_isolated("numpy:ones", (3 * 1024**3,), memory_bytes=1024**3)
    assert info.value.code == "resource_limit"
    assert info.value.exit_status == 1


def test_timeout_kills_the_process_group():
    started = time.monotonic()
    with pytest.raises(EvaluationFailure) as info:
        run_isolated(time.sleep, (60,), timeout_s=2)
    assert info.value.code == "timeout"
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    ("target", "args", "name"),
    [
        ("ctypes:string_at", (0,), "SIGSEGV"),  # a real null-pointer read
        ("signal:raise_signal", (signal.SIGKILL,), "SIGKILL"),
    ],
)
def test_b7_signal_death_is_reported_as_crashed(target, args, name):
    with pytest.raises(EvaluationFailure) as info:
        run_isolated(target, args)
    assert info.value.code == "crashed"
    assert name in info.value.message


def test_exceptions_in_the_child_are_classified():
    with pytest.raises(EvaluationFailure) as info:
        run_isolated("json:loads", ("{not json",))
    assert info.value.code == "failed"
    assert "JSONDecodeError" in info.value.message


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
    return build_lm_bundle(tmp_path_factory.mktemp("sb") / "lm")[0]


@pytest.fixture(scope="module")
def pp_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pp.jsonl"
    lines = (SUITE_LINE.format(i) for i in range(3))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SUITE_LINE = '{{"id": "t{0}", "text": "The town hall opens at nine on day {0}."}}'


def test_evaluate_bundle_on_a_zip_with_the_right_digest(tmp_path, lm_bundle, pp_data):
    archive = shutil.make_archive(str(tmp_path / "bundle"), "zip", lm_bundle)
    digest = sha256_file(archive)
    events = []
    out = evaluate_bundle(
        archive,
        task="perplexity",
        data=pp_data,
        expected_digest=f"sha256:{digest}",
        progress=events.append,
    )
    assert events[-1] == {"task": "perplexity", "done": 3, "total": 3}
    assert out["task"] == "perplexity"
    assert out["bundle_sha256"] == digest
    assert out["facts"]["kind"] == "causal_lm_kv"
    (result,) = out["results"]
    assert result["metrics"]["token_count"] > 0
    assert [i["id"] for i in result["items"]] == ["t0", "t1", "t2"]
    assert result["performance"]["model_load_s"] > 0
    assert len(result["data_sha256"]) == 64
    # The bundle sat in pytest's 0700 folder; the confined child read it, and
    # the run's environment record says how it was confined.
    confinement = result["environment"]["sandbox"]
    assert confinement == out["sandbox"]
    assert all(
        confinement[layer].startswith("applied")
        for layer in ("netns", "seccomp", "landlock")
    )


def test_directory_digest_is_the_sorted_sha256sum_manifest(lm_bundle):
    import hashlib

    files = sorted(p for p in lm_bundle.rglob("*") if p.is_file())
    manifest = "".join(
        f"{sha256_file(p)}  ./{p.relative_to(lm_bundle).as_posix()}\n" for p in files
    )
    expected = hashlib.sha256(manifest.encode()).hexdigest()
    assert sandbox.bundle_digest(lm_bundle) == expected


def test_bad_digest_is_refused_before_any_session(lm_bundle, pp_data):
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(
            lm_bundle, task="perplexity", data=pp_data, expected_digest="0" * 64
        )
    assert info.value.code == "refused"
    assert info.value.reason == "digest_mismatch"
    assert info.value.exit_status == 2


def test_disallowed_operator_is_refused_by_inspection(tmp_path, pp_data):
    node = helper.make_node("Evil", ["x"], ["y"], domain="com.example.custom")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", 18),
            helper.make_opsetid("com.example.custom", 1),
        ],
    )
    (tmp_path / "b").mkdir()
    onnx.save(model, tmp_path / "b" / "model.onnx")
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(tmp_path / "b", task="perplexity", data=pp_data)
    assert info.value.code == "refused"
    assert info.value.reason == "op_not_allowed"


def memory_bomb_model() -> onnx.ModelProto:
    """A 3-feature classifier whose graph materialises a 1.6 GB tensor."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [20000, 20000])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Mul", ["x", "total"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_b4_model_exceeding_the_memory_limit_fails_with_resource_limit(tmp_path):
    (tmp_path / "bomb").mkdir()
    onnx.save(memory_bomb_model(), tmp_path / "bomb" / "model.onnx")
    records = [{"features": [0.1, 0.2, 0.3], "label": 0}]
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(
            tmp_path / "bomb",
            task="classification",
            data=records,
            memory_bytes=1024**3,
            timeout_s=120,
        )
    assert info.value.code == "resource_limit"


def test_data_errors_are_caught_before_the_child_starts(tmp_path, lm_bundle):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(lm_bundle, task="perplexity", data=bad)
    assert info.value.code == "data_error"
    assert "line 2" in info.value.message


def test_unsupported_task_for_the_bundle_kind(tmp_path):
    root = build_tabular_bundle(tmp_path / "tab")[0]
    records = read_suite_records("civitas-perplexity-public-texts")[:1]
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(root, task="perplexity", data=records)
    assert info.value.code == "unsupported_task"
    assert info.value.exit_status == 2


# --- B9: the child has no network, no secrets and a narrow filesystem ---------
# Each probe is what hostile code inside the child (an ONNX Runtime memory bug
# is enough) would try; it runs as the target of a real child.


@pytest.fixture
def loopback_server():
    """A TCP server on 127.0.0.1 that records whether anyone connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    yield server
    server.close()


def _was_contacted(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


def _make_var(root: Path) -> dict[str, Path]:
    """A var/ like `make run` leaves, readable by anyone (the worst case)."""
    root.mkdir(mode=0o755, parents=True)
    files = {
        "signing_key": root / "signing-key.pem",
        "secret_key": root / "secret_key",
        "database": root / "civitas.sqlite3",
    }
    files["signing_key"].write_text(
        "-----BEGIN PRIVATE KEY-----\nB9-SIGNING-KEY\n-----END PRIVATE KEY-----\n"
    )
    files["secret_key"].write_text("B9-SECRET-KEY-VALUE\n")
    with sqlite3.connect(files["database"]) as db:
        db.execute("create table t (secret text)")
        db.execute("insert into t values ('B9-ROW')")
    db.close()
    for path in files.values():
        path.chmod(0o644)
    return files


@pytest.fixture(params=["embedded", "production"])
def platform_env(request, monkeypatch):
    """The worker's environment on the embedded default and on the production path."""
    base = Path(os.environ.get("CIVITAS_VAR_DIR") or sandbox.PROJECT_ROOT / "var")
    var = base / f"b9-{request.param}-{uuid.uuid4().hex[:8]}"
    files = _make_var(var)
    if request.param == "embedded":
        for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CIVITAS_SIGNING_KEY_FILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("CIVITAS_VAR_DIR", str(var))
        monkeypatch.setenv("SECRET_KEY_FILE", str(files["secret_key"]))
        services = []
    else:
        monkeypatch.setenv("DATABASE_URL", "postgres://civitas:B9-DB-PW@127.0.0.1/c")
        monkeypatch.setenv("CELERY_BROKER_URL", "redis://:B9-REDIS-PW@127.0.0.1:6379/0")
        monkeypatch.setenv("SECRET_KEY", "B9-SECRET-KEY-VALUE")
        monkeypatch.setenv("CIVITAS_SIGNING_KEY_FILE", str(files["signing_key"]))
        services = [("127.0.0.1", 5432), ("127.0.0.1", 6379)]  # PostgreSQL, Redis
    yield SimpleNamespace(kind=request.param, var=var, files=files, services=services)
    shutil.rmtree(var, ignore_errors=True)


def _refused(target, *args, **kwargs) -> EvaluationFailure:
    with pytest.raises(EvaluationFailure) as info:
        run_isolated(target, args, timeout_s=60, **kwargs)
    assert info.value.code == "failed"
    return info.value


def test_b9_child_has_no_network_secrets_or_foreign_files(
    platform_env, loopback_server, tmp_path
):
    # Network: the test's own loopback server, the platform's services, the
    # cloud metadata address, an outside host; refused at once (not a
    # timeout) by the sandbox itself, whatever this machine's network.
    host, port = loopback_server.getsockname()
    outside = [("169.254.169.254", 80), ("1.1.1.1", 443)]
    for address in [(host, port), *platform_env.services, *outside]:
        failure = _refused(socket.create_connection, address, 3)
        assert "Permission denied" in failure.message, (address, failure.message)
    assert not _was_contacted(loopback_server)

    # Secrets: not in the environment, not readable as files.
    seen = run_isolated("engine.sandbox:child_report")
    assert "B9-" not in json.dumps(seen["env"])
    other_run = Path(tempfile.mkdtemp(prefix="civitas-eval-other-"))
    (other_run / "rows.jsonl").write_text('{"text": "another run"}\n')
    (other_run / "rows.jsonl").chmod(0o644)
    try:
        for path in [*platform_env.files.values(), other_run / "rows.jsonl"]:
            failure = _refused(open, str(path), "rb")
            assert "Permission denied" in failure.message, path
    finally:
        shutil.rmtree(other_run)

    # Writing outside the scratch folder.
    targets = [
        Path("/tmp") / f"b9-{uuid.uuid4().hex}",
        sandbox.PROJECT_ROOT / f"b9-{uuid.uuid4().hex}",
        platform_env.var / "written-by-the-child",
    ]
    for path in targets:
        failure = _refused(open, str(path), "w")
        assert "Permission denied" in failure.message, path
        assert not path.exists()

    # An unprivileged user where the worker is root.
    if os.geteuid() == 0:
        assert seen["uid"] != 0
        assert run_isolated(os.getuid) != 0
    assert seen["sandbox"]["netns"].startswith("applied")
    assert seen["sandbox"]["seccomp"].startswith("applied")
    assert seen["sandbox"]["landlock"].startswith("applied")


def test_b9_child_inherits_no_descriptor_or_variable_holding_the_key(platform_env):
    key = platform_env.files["signing_key"]
    fd = os.open(key, os.O_RDONLY)
    os.set_inheritable(fd, True)  # the worst case: a descriptor left inheritable
    try:
        seen = run_isolated("engine.sandbox:child_report")
    finally:
        os.close(fd)
    assert str(key) not in seen["fds"].values()
    assert {int(n) for n in seen["fds"]} <= {0, 1, 2, 3, 4}
    assert str(key) not in json.dumps(seen["env"])
    # Nor through the worker's /proc entries, also where the child keeps the
    # worker's uid (a non-root worker): Landlock alone holds there.
    for layers in (None, ["landlock"]):
        for name in ("environ", "maps", f"fd/{fd}"):
            path = f"/proc/{os.getpid()}/{name}"
            failure = _refused(open, path, "rb", layers=layers)
            assert "Permission denied" in failure.message, (layers, path)


def test_b9_network_namespace_alone_blocks_loopback(loopback_server):
    failure = _refused(
        socket.create_connection, loopback_server.getsockname(), 3, layers=["netns"]
    )
    assert "Network is unreachable" in failure.message
    assert not _was_contacted(loopback_server)
    failure = _refused(
        socket.create_connection, ("169.254.169.254", 80), 3, layers=["netns"]
    )
    assert "Network is unreachable" in failure.message


def test_b9_seccomp_alone_refuses_inet_sockets(loopback_server):
    for family in (socket.AF_INET, socket.AF_INET6):
        failure = _refused(socket.socket, family, layers=["seccomp"])
        assert "Permission denied" in failure.message
    failure = _refused(
        socket.create_connection, loopback_server.getsockname(), 3, layers=["seccomp"]
    )
    assert "Permission denied" in failure.message
    assert not _was_contacted(loopback_server)
    # AF_UNIX stays (Python and the runtime use socketpairs internally).
    assert run_isolated(socket.socketpair, layers=["seccomp"])


def test_b9_landlock_alone_confines_files_and_tcp(platform_env, loopback_server):
    # No uid change and no namespace: even a root child is held by Landlock.
    only = {"layers": ["landlock"]}
    failure = _refused(open, str(platform_env.files["signing_key"]), "rb", **only)
    assert "Permission denied" in failure.message
    failure = _refused(open, f"/tmp/b9-{uuid.uuid4().hex}", "w", **only)
    assert "Permission denied" in failure.message
    failure = _refused(
        socket.create_connection, loopback_server.getsockname(), 3, **only
    )
    assert "Permission denied" in failure.message
    assert not _was_contacted(loopback_server)


def test_b9_declared_input_is_readable_and_scratch_writable(tmp_path):
    # The bundle sits in a 0700 folder of the worker (pytest's own is one):
    # the child still reads it, read-only, as the sandbox user.
    data = tmp_path / "bundle.bin"
    data.write_bytes(b"weights")
    assert run_isolated("codecs:open", (str(data), "rb"), inputs=[data])
    _refused(open, str(data), "ab", inputs=[data])
    _refused(open, str(data), "rb")  # not declared: not readable
    assert run_isolated(open, ("scratch-file", "w"))
    if os.geteuid() == 0:
        data.chmod(0o600)  # readable by the worker only: said, not guessed
        failure = _refused(open, str(data), "rb", inputs=[data])
        assert "not readable for the sandbox user" in failure.message


def test_b9_user_namespace_alone_blocks_loopback(loopback_server):
    # The path a non-root worker takes: a user namespace holding the network
    # namespace (no privilege needed), driven here directly in a child.
    host, port = loopback_server.getsockname()
    code = (
        "import ctypes, socket\n"
        "from engine import confine\n"
        "print(confine._new_netns(ctypes.CDLL(None, use_errno=True), False))\n"
        f"socket.create_connection(({host!r}, {port}), 3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=sandbox.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "applied: new user and network namespace" in proc.stdout
    assert proc.returncode != 0
    assert "Network is unreachable" in proc.stderr
    assert not _was_contacted(loopback_server)
