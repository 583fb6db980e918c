"""Run an evaluation in a child process with memory, time and environment limits.

An uploaded ONNX bundle is untrusted input for a large C++ runtime, so it is
only ever parsed and run in a child process that:

* starts from ``python -c`` (a fresh interpreter, nothing inherited but what
  is passed), in a new session so the whole process group can be killed;
* sets ``RLIMIT_AS`` (address space) before importing anything heavy, and
  ``RLIMIT_CORE = 0`` so a crash writes no core file;
* gets a scrubbed environment (``PATH``, ``LANG``, thread counts, ``HOME`` and
  ``TMPDIR`` pointing at a fresh temporary directory, which is also its cwd);
* is confined by ``engine.confine`` before it imports the target: no network
  (a new network namespace, a seccomp filter, Landlock), an unprivileged
  user when the worker is root (``CIVITAS_SANDBOX_UID``), and a filesystem
  view of its inputs (read-only), its scratch folder and the interpreter
  (Landlock); what was applied comes back as the result's ``sandbox`` record;
* sends its result back as JSON (never pickle: the parent must not execute
  anything the child could have forged) and progress as JSON lines on a pipe.

Failures come back as ``EvaluationFailure(code, message)``; see
``FAILURE_CODES``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import pickle
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine import ENGINE_VERSION, confine
from engine.scratch import make_scratch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MEMORY_BYTES = 4 * 1024**3
DEFAULT_TIMEOUT_S = 3600.0

FAILURE_CODES = {
    "resource_limit": "the child ran out of its memory allowance",
    "timeout": "the child ran past its wall-clock limit and was killed",
    "crashed": "the child died from a signal or exited without a result",
    "refused": "the bundle failed validation (the bundle error code follows)",
    "data_error": "the task data or suite is malformed",
    "unsupported_task": "the model kind cannot run the task",
    "bad_request": "the evaluation request itself is inconsistent",
    "cancelled": "the run was cancelled; the child's process group was killed",
    "failed": "an unexpected error inside the evaluation",
}
BAD_INPUT_CODES = frozenset(
    {"refused", "data_error", "unsupported_task", "bad_request"}
)

# Variables copied from the parent when set: locale, and the knobs that size
# thread pools and the energy estimate. Everything else (tokens, passwords,
# database URLs) stays behind.
_PASSED_VARS = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ORT_NUM_THREADS",
    "CIVITAS_WATTS_PER_CORE",
)

_MEMORY_HINTS = (
    "MemoryError",
    "bad_alloc",
    "Failed to allocate",
    "Cannot allocate memory",
    "failed to allocate",
    "out of memory",
    # What a too-small address space looks like while loading shared
    # libraries or starting thread pools.
    "failed to map segment",
    "pthread_create failed",
)

# PR_SET_PDEATHSIG: the child is killed when the process that started it dies
# (a Celery pool child killed mid-run), instead of running on as an orphan
# for the rest of its time limit. Linux only; elsewhere the time limit holds.
_BOOT = """\
import ctypes, resource, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (AttributeError, OSError):
    pass
limit = int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
if hard != resource.RLIM_INFINITY:
    limit = min(limit, hard)
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
from engine.sandbox import child_main
sys.exit(child_main(sys.argv[1]))
"""


class EvaluationFailure(Exception):
    """An evaluation that did not produce a result; ``code`` is in ``FAILURE_CODES``.

    ``reason`` carries the bundle validator's code when ``code == "refused"``.
    """

    def __init__(self, code: str, message: str, *, reason: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.reason = code, message, reason

    @property
    def exit_status(self) -> int:
        """2 for bad input (data, bundle, request), 1 for a failed run."""
        return 2 if self.code in BAD_INPUT_CODES else 1

    def to_dict(self) -> dict:
        """JSON-able form, as stored on a failed run."""
        return {"code": self.code, "message": self.message, "reason": self.reason}


def scrubbed_env(home: str | Path, threads: int | None = None) -> dict[str, str]:
    """Environment for the child: an allow-list, never the parent's secrets."""
    env = {k: os.environ[k] for k in _PASSED_VARS if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update(
        HOME=str(home),
        TMPDIR=str(home),
        PYTHONPATH=str(PROJECT_ROOT),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        # glibc reserves 64 MiB of address space per malloc arena and per
        # thread; without a cap RLIMIT_AS would trip on reservations alone.
        MALLOC_ARENA_MAX="2",
    )
    if threads:
        for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[key] = str(threads)
    else:
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def _resolve(target: str | Callable) -> Callable:
    if callable(target):
        return target
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"expected 'module:function', got {target!r}")
    return getattr(importlib.import_module(module), name)


_progress_fd: int | None = None
_confinement: dict = {}
# Wall-clock marks inside the child (``time.time()``): entered, confined.
_marks: dict[str, float] = {}


def report_progress(event: dict) -> None:
    """Send a progress event from the child to the parent (no-op elsewhere)."""
    if _progress_fd is None:
        return
    line = (json.dumps(event, default=str) + "\n").encode("utf-8")
    with contextlib.suppress(OSError):
        os.write(_progress_fd, line)


def child_report() -> dict:
    """What a child sees: environment, cwd and limits (for operators and tests)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    core, _ = resource.getrlimit(resource.RLIMIT_CORE)
    return {
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "rlimit_as": soft,
        "rlimit_core": core,
        "pgid_is_own": os.getpgid(0) == os.getpid(),
        "uid": os.getuid(),
        "fds": _open_fds(),
        "sandbox": dict(_confinement),
    }


def _open_fds() -> dict[int, str]:
    """The child's open descriptors and what they point at (none inherited)."""
    found = {}
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        with contextlib.suppress(OSError):
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _classify_exception(exc: BaseException) -> tuple[str, str, str | None]:
    from engine.evaluate import DataError, UnsupportedTask

    if isinstance(exc, EvaluationFailure):
        return exc.code, exc.message, exc.reason
    if isinstance(exc, MemoryError):
        return "resource_limit", f"MemoryError: {exc}".rstrip(": "), None
    if isinstance(exc, DataError):
        return "data_error", str(exc), None
    if isinstance(exc, UnsupportedTask):
        return "unsupported_task", str(exc), None
    bundle_code = getattr(exc, "code", None)
    if type(exc).__name__ == "BundleError" and isinstance(bundle_code, str):
        message = getattr(exc, "message", None) or str(exc)
        return "refused", f"{bundle_code}: {message}", bundle_code
    text = f"{type(exc).__name__}: {exc}"
    if any(hint in text for hint in _MEMORY_HINTS):
        return "resource_limit", text[:2000], None
    return "failed", text[:2000], None


def child_main(request_path: str) -> int:
    """Entry point inside the child: run the request, write ``result.json``.

    File descriptor 1 becomes the progress channel; ``sys.stdout`` is pointed
    at stderr so stray prints cannot corrupt it.
    """
    global _progress_fd, _confinement
    _marks["entered"] = time.time()
    _progress_fd = os.dup(1)
    os.dup2(2, 1)
    result_path = Path(request_path).with_name("result.json")
    try:
        # Confined first, while the child is still one thread (a user
        # namespace needs that) and before unpickling imports the target; a
        # layer that fails unexpectedly fails the run, never runs it unconfined.
        policy = json.loads(result_path.with_name("sandbox.json").read_text())
        _confinement = confine.apply(policy, result_path.parent)
        _marks["confined"] = time.time()
        request = pickle.loads(Path(request_path).read_bytes())
        value = _resolve(request["fn"])(*request["args"], **request["kwargs"])
        payload = {"ok": True, "value": value}
    except BaseException as exc:  # every failure must reach the parent
        code, message, reason = _classify_exception(exc)
        payload = {"ok": False, "code": code, "message": message, "reason": reason}
    try:
        text = json.dumps(payload, default=_jsonable, allow_nan=False)
    except ValueError:
        text = json.dumps(_denan(payload), default=_jsonable)
    result_path.write_text(text, encoding="utf-8")
    return 0


def _denan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _denan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_denan(v) for v in value]
    return value


def _read_progress(stream, progress: Callable[[dict], None] | None) -> None:
    # The pipe is drained to the end whatever happens: a full pipe would block
    # the child until the timeout.
    for raw in stream:
        if progress is None:
            continue
        try:
            progress(json.loads(raw))
        except Exception:  # a faulty callback must not stall the child
            progress = None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stop_requested(should_stop: Callable[[], bool]) -> bool:
    # A failing check (the database briefly away) must not kill a good run.
    try:
        return bool(should_stop())
    except Exception:
        return False


def _wait(
    proc: subprocess.Popen,
    timeout_s: float,
    should_stop: Callable[[], bool] | None,
    poll_s: float,
) -> int:
    """Wait for the child; raise ``timeout`` past ``timeout_s``, ``cancelled``
    as soon as ``should_stop()`` (asked every ``poll_s``) says so."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EvaluationFailure(
                "timeout", f"no result after {timeout_s:g} s; process group killed"
            )
        step = min(poll_s, remaining) if should_stop is not None else remaining
        try:
            return proc.wait(timeout=step)
        except subprocess.TimeoutExpired:
            pass
        if should_stop is not None and _stop_requested(should_stop):
            raise EvaluationFailure(
                "cancelled", "the run was cancelled; process group killed"
            )


def run_isolated(
    target: str | Callable,
    args: tuple | list = (),
    kwargs: dict | None = None,
    *,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads: int | None = None,
    progress: Callable[[dict], None] | None = None,
    inputs: Sequence[str | Path] = (),
    layers: Sequence[str] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 1.0,
    collect: dict[str, Path] | None = None,
) -> Any:
    """Call ``target(*args, **kwargs)`` in a limited child and return its JSON result.

    ``target`` is a module-level callable or ``"module:function"``; arguments
    are pickled to the child, the result comes back through JSON. ``inputs``
    are the only files or folders outside its scratch folder (and the
    interpreter) that the child may read; ``layers`` narrows the confinement
    to some of ``confine.LAYERS`` (tests probe one at a time). Raises
    ``EvaluationFailure`` with code ``resource_limit``, ``timeout``,
    ``crashed`` (naming the signal), ``cancelled`` (``should_stop()``, asked
    every ``poll_s`` seconds while the child runs, returned true) or the code
    the child reported. However the child ends, its process group is killed
    and its scratch folder (``civitas-eval-p<pid>-*``) removed before this
    returns or raises. ``collect`` maps file names the child wrote into its
    scratch folder to destinations they are moved to after a successful run
    (regular files only: a symlink or a missing file fails as ``crashed``).
    """
    tmp = make_scratch()
    try:
        request = tmp / "request.pkl"
        request.write_bytes(
            pickle.dumps({"fn": target, "args": tuple(args), "kwargs": kwargs or {}})
        )
        (tmp / "sandbox.json").write_text(
            json.dumps(confine.policy(inputs=inputs, layers=layers)), encoding="utf-8"
        )
        stderr_path = tmp / "stderr.log"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(request), str(int(memory_bytes))],
                cwd=tmp,
                env=scrubbed_env(tmp, threads),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
            )
            reader = threading.Thread(
                target=_read_progress, args=(proc.stdout, progress), daemon=True
            )
            reader.start()
            started = time.monotonic()
            try:
                returncode = _wait(proc, timeout_s, should_stop, poll_s)
            finally:
                _kill_group(proc.pid)
                proc.wait()
                reader.join(timeout=5)
                if proc.stdout is not None:
                    proc.stdout.close()
        elapsed = time.monotonic() - started
        value = _collect(
            tmp / "result.json", stderr_path, returncode, elapsed, memory_bytes
        )
        for name, dest in (collect or {}).items():
            _take(tmp / name, Path(dest))
        return value
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _take(source: Path, dest: Path) -> None:
    """Move a file the child wrote out of its scratch folder; regular files only."""
    try:
        mode = os.lstat(source).st_mode
    except OSError:
        mode = 0
    if not stat.S_ISREG(mode):
        raise EvaluationFailure("crashed", f"the child left no file {source.name}")
    shutil.move(source, dest)


def _stderr_tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()


def _collect(
    result_path: Path, stderr_path: Path, returncode: int, elapsed: float, memory: int
) -> Any:
    tail = _stderr_tail(stderr_path)
    if result_path.exists() and returncode == 0:
        try:
            payload = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EvaluationFailure("crashed", f"unreadable result: {exc}") from None
        if payload.get("ok"):
            return payload.get("value")
        raise EvaluationFailure(
            str(payload.get("code") or "failed"),
            str(payload.get("message") or ""),
            reason=payload.get("reason"),
        )
    memory_hint = any(hint in tail for hint in _MEMORY_HINTS)
    last_line = tail.splitlines()[-1] if tail else ""
    if returncode < 0:
        name = _signal_name(-returncode)
        if memory_hint:
            raise EvaluationFailure(
                "resource_limit",
                f"killed by {name} after exhausting {memory} bytes: {last_line}",
            )
        raise EvaluationFailure(
            "crashed", f"killed by {name} after {elapsed:.1f} s. {last_line}".strip()
        )
    if memory_hint:
        raise EvaluationFailure(
            "resource_limit", f"address-space limit of {memory} bytes: {last_line}"
        )
    raise EvaluationFailure(
        "crashed", f"exited with status {returncode} and no result. {last_line}".strip()
    )


def _verified_root(spec: dict, timings: dict) -> tuple[Path, str]:
    """The bundle root and its digest, checked against the expected one.

    A folder the worker's bundle cache verified (``spec["verified"]``) is
    not hashed again; anything else is hashed here, and an archive is
    extracted into the child's scratch folder.
    """
    from engine import archive

    source = Path(spec["bundle_path"])
    expected = spec.get("expected_digest")
    t0 = time.perf_counter()
    if spec.get("verified") and expected and source.is_dir():
        digest = expected.lower().removeprefix("sha256:")
    else:
        digest = bundle_digest(source)
    if expected and digest != expected.lower().removeprefix("sha256:"):
        raise EvaluationFailure(
            "refused",
            f"digest_mismatch: expected {expected}, bundle has sha256:{digest}",
            reason="digest_mismatch",
        )
    t1 = time.perf_counter()
    root = (
        source
        if source.is_dir()
        else Path(archive.materialise_bundle(source, Path.cwd() / "bundle"))
    )
    timings.update(digest_s=t1 - t0, extract_s=time.perf_counter() - t1)
    return root, digest


def evaluate_in_child(spec: dict) -> dict:
    """Verify, inspect, load and evaluate one bundle (runs inside the child).

    ``spec`` is what ``evaluate_bundle`` prepared; see there.
    """
    from engine import bundle, evaluate, runtime, session, suites

    timings = {"imported": time.time()}
    root, digest = _verified_root(spec, timings)
    t2 = time.perf_counter()
    facts = bundle.inspect_bundle(root)
    settings = session.RuntimeSettings(**(spec.get("settings") or {}))
    t0 = time.perf_counter()
    try:
        model = runtime.load_model(root, settings=settings, digest=digest, facts=facts)
    except session.RuntimeCheckError as exc:
        raise EvaluationFailure(
            "refused", f"runtime_check: {exc}", reason="runtime_check"
        ) from exc
    except Exception as exc:
        # onnxruntime refusing the graph is a property of the bundle, not a
        # crash of the engine; allocation failures stay resource_limit.
        code, message, _ = _classify_exception(exc)
        if code != "failed" or "onnxruntime" not in type(exc).__module__:
            raise
        raise EvaluationFailure(
            "refused", f"runtime_rejected: {message}", reason="runtime_rejected"
        ) from exc
    load_s = time.perf_counter() - t0
    timings.update(inspect_s=t0 - t2, load_s=load_s)

    def progress(name: str, done: int, total: int) -> None:
        """Forward a runner's progress to the parent."""
        report_progress({"task": name, "done": done, "total": total})

    common = {
        "batch_size": spec["batch_size"],
        "max_new_tokens": spec["max_new_tokens"],
        "load_seconds": load_s,
    }
    t0 = time.perf_counter()
    if spec.get("suite") is not None:
        suite = spec["suite"]
        results = suites.run_suite(model, suite, progress=progress, **common)
        head = {"suite": suite.name, "suite_version": suite.version}
    else:
        task = spec["task"]
        one = evaluate.run_task(
            model,
            task,
            spec["records"],
            progress=lambda d, t: progress(task, d, t),
            options=spec.get("options") or {},
            **common,
        )
        one.data_sha256 = spec.get("data_sha256")
        results, head = [one], {"task": task}
    timings.update(tasks_s=time.perf_counter() - t0, **_marks)
    facts_dict = facts.to_dict() if hasattr(facts, "to_dict") else facts
    dicts = [r.to_dict() for r in results]
    for one_dict in dicts:
        # The run's environment record says how the child was confined.
        if isinstance(one_dict.get("environment"), dict):
            one_dict["environment"]["sandbox"] = dict(_confinement)
    return {
        **head,
        "results": dicts,
        "facts": facts_dict,
        "bundle_sha256": digest,
        "engine_version": ENGINE_VERSION,
        "sandbox": dict(_confinement),
        "timings": timings,
    }


def bundle_digest(path: str | Path) -> str:
    """Hex SHA-256 identifying a bundle: of the file for an archive or a lone
    ``.onnx``; for a directory, of its manifest.

    The manifest is ``sha256sum``'s output over every regular file, sorted by
    relative POSIX path (``"<hex>  <path>\\n"`` lines), so the digest can be
    reproduced with ``find . -type f | sort | xargs sha256sum | sha256sum``
    run from the bundle root with ``LC_ALL=C``.
    """
    from engine.bundle import sha256_file

    root = Path(path)
    if root.is_file():
        return sha256_file(root)
    lines = []
    for file in sorted(
        (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()),
        key=lambda p: p.relative_to(root).as_posix().encode("utf-8"),
    ):
        lines.append(f"{sha256_file(file)}  ./{file.relative_to(root).as_posix()}\n")
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def evaluate_bundle(
    bundle_path: str | Path,
    *,
    suite: str | Path | dict | None = None,
    task: str | None = None,
    data: str | Path | list | None = None,
    options: dict | None = None,
    expected_digest: str | None = None,
    settings: Any = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    batch_size: int = 8,
    max_new_tokens: int = 48,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 1.0,
    verified: bool = False,
) -> dict:
    """Evaluate a bundle (directory or archive) on a suite or one task, isolated.

    The one entry point for the Celery worker and the CLI. The suite or data
    file is read and validated here (cheap, trusted parser); the bundle is
    only touched inside the child, which verifies ``expected_digest``, runs
    ``bundle.inspect_bundle``, loads the model and runs the tasks. Returns
    ``{"task" | "suite", "results": [...], "facts", "bundle_sha256",
    "engine_version"}``; raises ``EvaluationFailure`` (``cancelled`` when
    ``should_stop()``, asked every ``poll_s`` seconds, returns true: see
    ``run_isolated``). ``verified`` says that ``bundle_path`` is a folder the
    caller extracted from an artifact whose SHA-256 it checked against
    ``expected_digest`` and made read-only (``engine.bundlecache``): the
    child then does not hash it again. The result's ``timings`` break the
    child's time down (seconds; ``child_start_s`` from spawning to the
    child's entry point, ``confine_s``, ``import_s``, ``digest_s``,
    ``extract_s``, ``inspect_s``, ``load_s``, ``tasks_s``, ``child_s`` in all).
    """
    if (suite is None) == (task is None):
        raise EvaluationFailure("bad_request", "give either a suite or a task")
    if task is not None and data is None:
        raise EvaluationFailure("bad_request", f"task '{task}' needs data")
    path = Path(bundle_path)
    if not path.exists():
        raise EvaluationFailure("bad_request", f"bundle {path} does not exist")
    spec: dict[str, Any] = {
        "bundle_path": str(path.resolve()),
        "expected_digest": expected_digest,
        "settings": _settings_dict(settings),
        "batch_size": int(batch_size),
        "max_new_tokens": int(max_new_tokens),
        "verified": bool(verified and expected_digest and path.is_dir()),
    }
    _add_work(spec, suite=suite, task=task, data=data, options=options)
    threads = spec["settings"].get("intra_op_threads") or None
    spawned = time.time()
    result = run_isolated(
        evaluate_in_child,
        (spec,),
        memory_bytes=memory_bytes,
        timeout_s=timeout_s,
        threads=threads,
        progress=progress,
        inputs=[spec["bundle_path"]],
        should_stop=should_stop,
        poll_s=poll_s,
    )
    if isinstance(result, dict) and isinstance(result.get("timings"), dict):
        result["timings"] = _child_timings(result["timings"], spawned, time.time())
    return result


def _add_work(spec: dict, *, suite, task, data, options) -> None:
    """Read and validate the suite, or one task's data, into ``spec``."""
    from engine import evaluate, suites
    from engine.bundle import sha256_file

    try:
        if suite is not None:
            spec["suite"] = (
                suite if isinstance(suite, suites.Suite) else suites.load_suite(suite)
            )
        else:
            if task not in evaluate.TASKS:
                raise evaluate.UnsupportedTask(f"unknown task '{task}'")
            if isinstance(data, list):
                records = evaluate.Records(data)
            else:
                records = evaluate.read_jsonl(data)
                spec["data_sha256"] = sha256_file(Path(data))
            evaluate.validate_records(task, records)
            spec.update(task=task, records=records, options=options or {})
    except evaluate.DataError as exc:
        raise EvaluationFailure("data_error", str(exc)) from None
    except evaluate.UnsupportedTask as exc:
        raise EvaluationFailure("unsupported_task", str(exc)) from None


def _child_timings(marks: dict, spawned: float, ended: float) -> dict:
    """Durations from the child's wall-clock marks and the parent's own."""
    out = {k: v for k, v in marks.items() if k.endswith("_s")}
    entered, confined = marks.get("entered"), marks.get("confined")
    imported = marks.get("imported")
    if isinstance(entered, float):
        out["child_start_s"] = max(0.0, entered - spawned)
    if isinstance(entered, float) and isinstance(confined, float):
        out["confine_s"] = max(0.0, confined - entered)
    if isinstance(confined, float) and isinstance(imported, float):
        out["import_s"] = max(0.0, imported - confined)
    out["child_s"] = ended - spawned
    return out


def _settings_dict(settings: Any) -> dict:
    if settings is None:
        return {}
    if hasattr(settings, "to_dict"):
        return dict(settings.to_dict())
    return dict(settings)
