"""Upload benchmark: a generated ONNX bundle streamed through the running API.

The bundle is a stored zip of a small ``model.onnx`` whose one initializer
lives in ``weights.bin`` (external data) of ``--size-mb`` MiB, so the server
does the full job: spool with SHA-256, unpack, inspect, store. The request
body is streamed from disk (a file object; Content-Length set), never built
in memory. Printed side by side:

* upload throughput (MiB/s, wall clock of the request, response included);
* the raw disk copy speed of the same file (``shutil.copyfileobj``) measured
  in the same run, and the ratio of the two;
* the peak RSS of the gunicorn worker processes (psutil, sampled every 20 ms
  in a thread), against their idle RSS before the upload;
* the same bundle through the resumable protocol (``--parallel`` parts in
  flight, ``--part-mb`` each): create, PUT parts, complete (the server's
  whole-bundle SHA-256 and the bundle checks included), with the same figures.
  Each part is sent from the file with ``socket.sendfile`` (a client that
  does not copy); part digests are computed before the clock starts, as a
  client hashing while it reads would do on another core.

Against a running server::

    python bench/upload.py --url http://127.0.0.1:8000 --token TOKEN --size-mb 1024

(creates a model and a version through the API unless ``--version-id`` is
given; finds the gunicorn processes by the listening port, or ``--server-pid``).

Self-contained (starts gunicorn on a scratch SQLite var dir, creates a user,
token and version through the services, runs, stops it)::

    python bench/upload.py --self-serve --size-mb 1024 [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import requests
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

# Run inside the server's environment by --self-serve: everything through the
# services, as any script must. Prints {"token": ..., "version_id": ...}.
_SETUP = """
import json, django
django.setup()
from django.contrib.auth import get_user_model
from registry import services
from registry.models import Role, Task
User = get_user_model()
admin = User.objects.create_superuser("bench-admin", "admin@bench.invalid", None)
agency = services.agency_create(actor=admin, name="Bench Agency", slug="bench",
                                jurisdiction="FR")
member = User.objects.create_user("bench-member", "member@bench.invalid", None)
services.membership_add(actor=admin, agency=agency, user=member,
                        role=Role.MAINTAINER)
licence, _ = services.licence_register(actor=member, expression="Apache-2.0")
model = services.model_create(actor=member, name="Bench model", slug="bench-model",
                              task=Task.OTHER, intended_use="Upload benchmark.")
version = services.model_version_create(actor=member, model=model,
                                        version="1.0.0", licence=licence)
other = services.model_version_create(actor=member, model=model,
                                      version="1.0.1", licence=licence)
_, token = services.token_create(actor=member)
print(json.dumps({"token": token, "version_id": version.pk,
                  "resumable_version_id": other.pk}))
"""


def _model_bytes(elements: int) -> bytes:
    """A generic model y = x + W, W float32[elements] in weights.bin."""
    weight = TensorProto()
    weight.name = "W"
    weight.data_type = TensorProto.FLOAT
    weight.dims.append(elements)
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (
        ("location", "weights.bin"),
        ("offset", "0"),
        ("length", str(elements * 4)),
    ):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def make_bundle(path: Path, size_mb: int) -> str:
    """Write the zip bundle (stored, not compressed) and return its SHA-256."""
    data_bytes = size_mb * MIB
    block = (bytes(range(1, 256)) * (MIB // 255 + 1))[:MIB]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("model.onnx", _model_bytes(data_bytes // 4))
        info = zipfile.ZipInfo("weights.bin")
        info.compress_type = zipfile.ZIP_STORED
        with zf.open(info, "w", force_zip64=data_bytes > 2**31) as out:
            for _ in range(size_mb):
                out.write(block)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def disk_copy_seconds(source: Path, scratch_dir: Path) -> float:
    """Time a plain ``shutil.copyfileobj`` of the file, 1 MiB buffer."""
    target = scratch_dir / "disk-copy.bin"
    started = time.perf_counter()
    with open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, MIB)
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


class RssSampler(threading.Thread):
    """Samples the RSS of the gunicorn worker processes until stopped."""

    def __init__(self, roots: list[int], interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.interval = interval
        self.peak: dict[int, int] = {}
        self._done = threading.Event()

    def workers(self) -> list[psutil.Process]:
        """The worker processes (children of the masters, or the roots themselves)."""
        found: dict[int, psutil.Process] = {}
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for proc in children or [root]:
                found[proc.pid] = proc
        return list(found.values())

    def snapshot(self) -> dict[int, int]:
        """Current RSS of each worker."""
        rss = {}
        for proc in self.workers():
            with contextlib.suppress(psutil.NoSuchProcess):
                rss[proc.pid] = proc.memory_info().rss
        return rss

    def run(self) -> None:
        while not self._done.is_set():
            for pid, rss in self.snapshot().items():
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
            time.sleep(self.interval)

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._done.set()
        self.join()


def _listening_pids(port: int) -> list[int]:
    pids = set()
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if (
                conn.status == psutil.CONN_LISTEN
                and conn.laddr
                and conn.laddr.port == port
                and conn.pid
            ):
                pids.add(conn.pid)
    except psutil.AccessDenied:
        return []
    # Workers share the master's socket; keep only the top-most processes.
    tops = set()
    for pid in pids:
        try:
            parent = psutil.Process(pid).parent()
        except psutil.NoSuchProcess:
            continue
        tops.add(parent.pid if parent and parent.pid in pids else pid)
    return sorted(tops)


def _create_version(base: str, headers: dict[str, str]) -> int:
    """A fresh model and version through the API, for --url without --version-id."""
    slug = f"bench-{int(time.time())}-{secrets.token_hex(2)}"
    model = requests.post(
        f"{base}/api/v1/models/",
        json={
            "name": slug,
            "slug": slug,
            "task": "other",
            "intended_use": "Upload benchmark.",
        },
        headers=headers,
        timeout=30,
    )
    model.raise_for_status()
    version = requests.post(
        f"{base}/api/v1/model-versions/",
        json={"model": model.json()["id"], "version": "1.0.0", "licence": "Apache-2.0"},
        headers=headers,
        timeout=30,
    )
    version.raise_for_status()
    return version.json()["id"]


def _part_digests(path: Path, part_size: int) -> list[str]:
    digests = []
    with open(path, "rb") as f:
        while data := f.read(part_size):
            digests.append(hashlib.sha256(data).hexdigest())
    return digests


def _send_part(
    base: str, url: str, token: str, path: Path, offset: int, length: int, digest: str
) -> int:
    """PUT one part with ``socket.sendfile`` from the bundle; the status code."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=600)
    try:
        conn.putrequest("PUT", url)
        for name, value in (
            ("Authorization", f"Token {token}"),
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(length)),
            ("X-Part-SHA256", digest),
        ):
            conn.putheader(name, value)
        conn.endheaders()
        with open(path, "rb") as f:
            conn.sock.sendfile(f, offset, length)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def resumable_upload(
    *,
    base: str,
    token: str,
    version_id: int,
    bundle: Path,
    part_size: int,
    parallel: int,
    digests: list[str],
    phases: dict | None = None,
):
    """Create, PUT the parts ``parallel`` at a time, complete; the last response."""
    headers = {"Authorization": f"Token {token}"}
    size = bundle.stat().st_size
    root = f"/api/v1/model-versions/{version_id}/uploads/"
    opened = requests.post(
        base + root, headers=headers, timeout=60,
        json={"size": size, "part_size": part_size, "filename": bundle.name},
    )  # fmt: skip
    if opened.status_code != 201:
        return opened
    upload = f"{root}{opened.json()['id']}/"

    def send(index: int) -> int:
        offset = index * part_size
        length = min(part_size, size - offset)
        return _send_part(
            base, f"{upload}parts/{index + 1}/", token, bundle, offset, length,
            digests[index],
        )  # fmt: skip

    phases = {} if phases is None else phases
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        statuses = list(pool.map(send, range(len(digests))))
    phases["parts_seconds"] = round(time.perf_counter() - started, 3)
    if any(code != 200 for code in statuses):
        return requests.get(base + upload, headers=headers, timeout=60)
    started = time.perf_counter()
    done = requests.post(base + upload + "complete/", headers=headers, timeout=3600)
    phases["complete_seconds"] = round(time.perf_counter() - started, 3)
    return done


def _measured(server_pids: list[int], send) -> dict:
    """Run ``send()`` (returns a response) while sampling the workers' RSS."""
    sampler = RssSampler(server_pids)
    idle = sampler.snapshot()
    sampler.start()
    started = time.perf_counter()
    try:
        response = send()
    finally:
        seconds = time.perf_counter() - started
        sampler.stop()
    growth = max(
        (peak - idle.get(pid, peak) for pid, peak in sampler.peak.items()), default=0
    )
    peak_max = max(sampler.peak.values(), default=0)
    return {
        "response": response,
        "seconds": seconds,
        "workers": len(sampler.peak),
        "rss_idle_mib": round(max(idle.values()) / MIB, 1) if idle else None,
        "rss_peak_mib": round(peak_max / MIB, 1) if peak_max else None,
        "rss_growth_mib": round(growth / MIB, 1) if idle else None,
    }


def _put_single(base: str, headers: dict, version_id: int, bundle: Path):
    size = bundle.stat().st_size
    with open(bundle, "rb") as body:
        return requests.put(
            f"{base}/api/v1/model-versions/{version_id}/artifact/",
            data=body,
            headers={
                **headers,
                "Content-Type": "application/octet-stream",
                "Content-Disposition": 'attachment; filename="bench-bundle.zip"',
                "Content-Length": str(size),
            },
            timeout=3600,
        )


def _figures(run: dict, size: int, copy_s: float, digest: str) -> dict:
    response = run["response"]
    answer = response.json() if response.content else {}
    return {
        "status": response.status_code,
        "error": None if response.status_code == 202 else answer,
        "digest_match": answer.get("artifact_digest") == digest,
        "upload_seconds": round(run["seconds"], 3),
        "upload_mib_per_s": round(size / MIB / run["seconds"], 1),
        "upload_vs_disk_copy": round(copy_s / run["seconds"], 3),
        "server_workers": run["workers"],
        "server_worker_rss_idle_mib": run["rss_idle_mib"],
        "server_worker_rss_peak_mib": run["rss_peak_mib"],
        "server_worker_rss_growth_mib": run["rss_growth_mib"],
    }


def run_upload(
    *,
    base: str,
    token: str,
    version_id: int | None,
    size_mb: int,
    workdir: Path,
    server_pids: list[int],
    resumable_version_id: int | None = None,
    part_mb: int = 16,
    parallel: int = 4,
) -> dict:
    """Generate the bundle, measure the disk copy, upload both ways, collect figures."""
    headers = {"Authorization": f"Token {token}"}
    if version_id is None:
        version_id = _create_version(base, headers)
    if resumable_version_id is None:
        resumable_version_id = _create_version(base, headers)
    bundle = workdir / "bench-bundle.zip"
    local_digest = make_bundle(bundle, size_mb)
    size = bundle.stat().st_size
    copy_s = disk_copy_seconds(bundle, workdir)
    # Warm the workers (first requests import the engine and ONNX) so the
    # idle figure is a serving process, not a half-booted one.
    for _ in range(8):
        requests.get(
            f"{base}/api/v1/model-versions/{version_id}/artifact/",
            headers=headers,
            timeout=30,
        )
    single = _measured(
        server_pids, lambda: _put_single(base, headers, version_id, bundle)
    )
    part_size = part_mb * MIB
    digests = _part_digests(bundle, part_size)
    phases: dict = {}
    resumable = _measured(
        server_pids,
        lambda: resumable_upload(
            base=base, token=token, version_id=resumable_version_id,
            bundle=bundle, part_size=part_size, parallel=parallel, digests=digests,
            phases=phases,
        ),
    )  # fmt: skip
    bundle.unlink()
    result = {
        "size_bytes": size,
        "disk_copy_seconds": round(copy_s, 3),
        "disk_copy_mib_per_s": round(size / MIB / copy_s, 1),
        **_figures(single, size, copy_s, local_digest),
        "resumable": {
            "part_mib": part_mb,
            "parallel": parallel,
            "parts": len(digests),
            **phases,
            **_figures(resumable, size, copy_s, local_digest),
        },
    }
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env(var_dir: Path, port: int, size_mb: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "CELERY_", "MLFLOW_", "ARTIFACT_"))
    }
    cap = max(8 * 1024**3, (size_mb + 64) * MIB)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONPATH=str(ROOT),
        CIVITAS_VAR_DIR=str(var_dir),
        SECRET_KEY=secrets.token_urlsafe(48),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CIVITAS_HTTPS="false",
        CIVITAS_SIGNING_KEY_GENERATE="true",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="console",
        PORT=str(port),
        GUNICORN_BIND_HOST="127.0.0.1",
        API_THROTTLE_UPLOAD="1000/hour",
        CIVITAS_UPLOAD_MAX_BYTES=str(cap),
        CIVITAS_BUNDLE_MAX_UNPACKED_BYTES=str(cap),
    )
    return env


def self_serve(args) -> dict:
    """Start gunicorn on a scratch var dir, set up a version, run, stop."""
    (ROOT / "var").mkdir(exist_ok=True)  # a fresh checkout has none yet
    workdir = Path(tempfile.mkdtemp(prefix="bench-upload-", dir=ROOT / "var"))
    port = _free_port()
    env = _server_env(workdir, port, args.size_mb)
    python = sys.executable
    server = None
    try:
        subprocess.run(
            [python, "manage.py", "migrate", "--noinput"],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        setup = subprocess.run(
            [python, "-c", _SETUP],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        ids = json.loads(setup.stdout.strip().splitlines()[-1])
        server = subprocess.Popen(
            [python, "-m", "gunicorn", "config.wsgi:application",
             "-c", "deploy/gunicorn.conf.py"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/api/v1/me/", timeout=10)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        time.sleep(1.0)  # let every worker finish booting before the idle sample
        result = run_upload(
            base=base,
            token=ids["token"],
            version_id=ids["version_id"],
            resumable_version_id=ids["resumable_version_id"],
            size_mb=args.size_mb,
            workdir=workdir,
            server_pids=[server.pid],
            part_mb=args.part_mb,
            parallel=args.parallel,
        )
        result["server"] = "self-serve gunicorn " + (
            f"({env.get('WEB_CONCURRENCY', '2')} workers x "
            f"{env.get('GUNICORN_THREADS', '4')} threads, SQLite)"
        )
        return result
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running Civitas")
    parser.add_argument("--token", help="API token of a member of an agency")
    parser.add_argument("--version-id", type=int, help="an unreleased model version")
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="gunicorn master pid (default: found by the port)",
    )
    parser.add_argument(
        "--size-mb",
        type=int,
        default=1024,
        help="external data size in MiB (default 1024)",
    )
    parser.add_argument(
        "--self-serve",
        action="store_true",
        help="start gunicorn on a scratch SQLite var dir",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the bundle is generated (--url mode)"
    )
    parser.add_argument("--part-mb", type=int, default=16, help="resumable part MiB")
    parser.add_argument(
        "--parallel", type=int, default=4, help="resumable parts in flight"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)  # fmt: skip

    if args.self_serve:
        result = self_serve(args)
    else:
        if not (args.url and args.token):
            parser.error("give --url and --token, or --self-serve")
        base = args.url.rstrip("/")
        port = urlsplit(base).port or 80
        pids = args.server_pid or _listening_pids(port)
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-upload-"))
        try:
            result = run_upload(
                base=base,
                token=args.token,
                version_id=args.version_id,
                size_mb=args.size_mb,
                workdir=workdir,
                server_pids=pids,
                part_mb=args.part_mb,
                parallel=args.parallel,
            )
        finally:
            if args.workdir is None and not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        result["server"] = base

    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    ok = result["status"] == 202 and result["digest_match"]
    resumable = result["resumable"]
    return 0 if ok and resumable["status"] == 202 and resumable["digest_match"] else 1


def _print(result: dict) -> None:
    print(f"server:            {result['server']}")
    print(f"bundle:            {result['size_bytes'] / MIB:.0f} MiB")
    print(
        f"disk copy:         {result['disk_copy_seconds']:.2f} s  "
        f"{result['disk_copy_mib_per_s']:.1f} MiB/s"
    )
    resumable = result["resumable"]
    label = f"resumable {resumable['parallel']}x{resumable['part_mib']} MiB"
    for name, figures in (("single request", result), (label, resumable)):
        print(f"{name}:")
        print(f"  status {figures['status']}  digest match: {figures['digest_match']}")
        print(
            f"  upload {figures['upload_seconds']:.2f} s  "
            f"{figures['upload_mib_per_s']:.1f} MiB/s  "
            f"({figures['upload_vs_disk_copy']:.2f}x the disk copy)"
        )
        print(
            f"  worker RSS idle {figures['server_worker_rss_idle_mib']} MiB, "
            f"peak {figures['server_worker_rss_peak_mib']} MiB, "
            f"growth {figures['server_worker_rss_growth_mib']} MiB "
            f"({figures['server_workers']} workers sampled)"
        )
        if "parts_seconds" in figures:
            print(
                f"  parts {figures['parts_seconds']:.2f} s, complete (digest, "
                f"bundle check, store) {figures['complete_seconds']:.2f} s"
            )
        if figures["error"]:
            print(f"  error: {figures['error']}")


if __name__ == "__main__":
    sys.exit(main())
