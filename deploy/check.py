"""``make deploy-check``: the deployment of deploy/compose.yaml, run without containers.

From a clean ``git clone`` of this checkout, as an unprivileged user (one is
created when run as root; run as anyone else, the current user is that user),
with the environment of deploy/env.example (only the places, ports and
secrets' paths changed) and the two database roles of deploy/postgres/ on a
fresh database:

1. roles.sql as the PostgreSQL superuser; ``migrate``, ``createcachetable``,
   deploy/grants.py, ``mlflow_migrate`` and ``collectstatic`` as the owner;
2. a real ``mlflow server --allowed-hosts mlflow:5000,...``, gunicorn
   (deploy/gunicorn.conf.py), one Celery worker per queue and celery beat,
   as the app role;
3. through HTTP (behind a pretend TLS proxy: ``X-Forwarded-Proto: https``):
   health, the admin's CSS, a token, a licence, a model and a version, the
   upload of a modelgen bundle, an evaluation until ``succeeded``, its run in
   that MLflow server (MlflowClient over HTTP), and ``verify_audit``;
4. the app role is refused an UPDATE of the audit chain, live;

then everything is torn down (processes, database, roles, queues, files).
Exits 0 when every step passed; otherwise names the step and prints the last
lines of each process's log.

    python deploy/check.py [--superuser-url URL] [--redis-url URL] [--keep]

The current virtualenv is reused, not reinstalled: the unprivileged user runs
the same CPython build through a bare venv whose ``.pth`` file names the
current venv's site-packages (``bridge_python``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
CHECK_USER = "civitas-check"
SUITE = "civitas-perplexity-public-texts"
MLFLOW_PUBLIC_HOST = "mlflow:5000"
# As compose's mlflow service: Civitas uses no MLflow server jobs, whose
# consumers would otherwise take a dozen processes.
MLFLOW_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class CheckFailed(Exception):
    """A step of the check did not give the expected answer."""


def log(message: str) -> None:
    print(f"deploy-check {time.strftime('%H:%M:%S')}: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")


# --- The unprivileged user and its interpreter ----------------------------------


class Runner:
    """Runs commands in the clone as the unprivileged user, with one environment."""

    def __init__(self, *, src: Path, python: str, user: pwd.struct_passwd | None):
        self.src = src
        self.python = python
        self.user = user
        self.env: dict[str, str] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def _prefix(self) -> list[str]:
        if self.user is None:
            return []
        return [
            "setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
            "--clear-groups", "--inh-caps=-all", "--",
        ]  # fmt: skip

    def run(self, *args: str, env: dict[str, str] | None = None, timeout=300) -> str:
        """Run ``python ARGS`` to completion; its output, or CheckFailed."""
        command = [*self._prefix(), self.python, *args]
        result = subprocess.run(
            command, cwd=self.src, env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if result.returncode != 0:
            raise CheckFailed(
                f"`python {' '.join(args)[:120]}` exited {result.returncode}:\n"
                f"{result.stdout[-1500:]}{result.stderr[-3000:]}"
            )
        return result.stdout

    def start(self, name: str, *args: str, log_dir: Path, env=None) -> None:
        """Start a long-running ``python ARGS`` in its own process group."""
        self.logs[name] = log_dir / f"{name}.log"
        with open(self.logs[name], "wb") as out:
            self.procs[name] = subprocess.Popen(
                [*self._prefix(), self.python, *args], cwd=self.src,
                env={**self.env, **(env or {})},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise CheckFailed(f"{name} exited with status {proc.returncode}")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def tails(self, lines: int = 25) -> str:
        parts = []
        for name, path in self.logs.items():
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name} ({path}) ---\n" + "\n".join(text))
        return "\n".join(parts)


def unprivileged_user() -> pwd.struct_passwd | None:
    """The user to run as: created when root, None (the current user) otherwise."""
    if os.geteuid() != 0:
        log(f"not root: running as {pwd.getpwuid(os.geteuid()).pw_name}, "
            "which is already unprivileged")  # fmt: skip
        return None
    try:
        return pwd.getpwnam(CHECK_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell",
             "/usr/sbin/nologin", CHECK_USER],
            check=True,
        )  # fmt: skip
        log(f"created the unprivileged user {CHECK_USER}")
        return pwd.getpwnam(CHECK_USER)


def _link_tree(source: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    """Hard-link (or copy, across file systems) ``source`` to ``dest``."""

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(
        source, dest, symlinks=True, copy_function=link,
        ignore=shutil.ignore_patterns(*skip),
    )  # fmt: skip


def bridge_python(work: Path, user: pwd.struct_passwd) -> tuple[str, dict[str, str]]:
    """An interpreter the unprivileged user can run, reusing this venv's packages.

    The same CPython build as the current venv's (compiled packages must
    match it), made reachable: when the user cannot enter the directory it
    lives in (a home directory), its binary, shared library and standard
    library are hard-linked under ``work``. A bare venv on it gets a ``.pth``
    naming this venv's site-packages: nothing is installed. Returns the python
    and the environment it needs.
    """
    probe = subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
         "--clear-groups", "--", sys.executable, "-c",
         "import sys, django; print(sys.version)"],
        capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode == 0 and probe.stdout.strip() == sys.version:
        return sys.executable, {}
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base, home = Path(sys.base_prefix), work / "python"
    (home / "bin").mkdir(parents=True)
    (home / "lib").mkdir()
    shutil.copy2(base / "bin" / f"python{version}", home / "bin")
    for library in base.joinpath("lib").glob("libpython*.so*"):
        shutil.copy2(library, home / "lib", follow_symlinks=False)
    _link_tree(
        base / "lib" / f"python{version}", home / "lib" / f"python{version}",
        skip=("site-packages", "test", "idlelib", "tkinter", "turtledemo"),
    )  # fmt: skip
    extra = {"LD_LIBRARY_PATH": str(home / "lib")}
    venv = work / "venv"
    subprocess.run(
        [str(home / "bin" / f"python{version}"), "-m", "venv", "--without-pip",
         str(venv)],
        check=True, env={**os.environ, **extra},
    )  # fmt: skip
    purelib = next(Path(p) for p in site.getsitepackages() if p.endswith("-packages"))
    target = venv / "lib" / f"python{version}" / "site-packages"
    (target / "civitas-reuse.pth").write_text(f"{purelib}\n")
    subprocess.run(["chmod", "-R", "a+rX", str(home), str(venv)], check=True)
    return str(venv / "bin" / "python"), extra


# --- Database: a fresh database and its two roles -------------------------------


def with_user(url: str, user: str, password: str, dbname: str) -> str:
    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, f"/{dbname}", "", ""))


def psql(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-X", "-q", *args],
        capture_output=True, text=True, check=check, timeout=120,
    )  # fmt: skip


def create_database(superuser_url: str, dbname: str) -> dict[str, str]:
    """roles.sql on a fresh database; the owner's and the app role's URLs."""
    names = {"owner": f"{dbname}_owner", "app": f"{dbname}_app"}
    passwords = {k: secrets.token_urlsafe(18) for k in names}
    psql(
        superuser_url,
        "-v", f"dbname={dbname}", "-v", f"owner={names['owner']}",
        "-v", f"app={names['app']}",
        "-v", f"owner_password={passwords['owner']}",
        "-v", f"app_password={passwords['app']}",
        "-f", str(ROOT / "deploy" / "postgres" / "roles.sql"),
    )  # fmt: skip
    db = dbname
    return {
        "owner_role": names["owner"],
        "app_role": names["app"],
        "owner_url": with_user(superuser_url, names["owner"], passwords["owner"], db),
        "app_url": with_user(superuser_url, names["app"], passwords["app"], db),
    }


def drop_database(superuser_url: str, dbname: str) -> None:
    psql(superuser_url, "-c", f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)',
         check=False)  # fmt: skip
    for role in (f"{dbname}_app", f"{dbname}_owner"):
        psql(superuser_url, "-c", f'DROP ROLE IF EXISTS "{role}"', check=False)


# --- The environment of deploy/env.example ----------------------------------------


def read_env_example(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def write_secret(path: Path, value: str, owner: pwd.struct_passwd | None) -> str:
    path.write_text(value)
    path.chmod(0o400)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return str(path)


def signing_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def platform_env(*, src: Path, work: Path, db: dict, args, ports: dict, user) -> dict:
    """deploy/env.example, with this host's places, ports and secret files."""
    values = read_env_example(src / "deploy" / "env.example")
    var = work / "var"
    secrets_dir = work / "secrets"
    secrets_dir.mkdir(mode=0o711)
    queue = f"civitas-check-{secrets.token_hex(3)}"
    values.update(
        SECRET_KEY_FILE=write_secret(
            secrets_dir / "secret_key", secrets.token_urlsafe(64), user
        ),
        DATABASE_URL_FILE=write_secret(
            secrets_dir / "database_url", db["app_url"], user
        ),
        CIVITAS_SIGNING_KEY_FILE=write_secret(
            secrets_dir / "signing_key.pem", signing_key_pem(), user
        ),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CSRF_TRUSTED_ORIGINS=f"https://127.0.0.1:{ports['web']}",
        CIVITAS_VAR_DIR=str(var),
        STATIC_ROOT=str(var / "static"),
        ARTIFACT_ROOT=str(var / "artifacts"),
        ARTIFACT_TMP_DIR=str(var / "artifact-tmp"),
        CIVITAS_REFERENCE_ROOTS=str(work / "drop"),
        CELERY_BROKER_URL=args.redis_url,
        CACHE_URL=args.redis_url,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        CELERY_HOUSEKEEPING_QUEUE=f"{queue}-housekeeping",
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{ports['mlflow']}",
        PORT=str(ports["web"]),
        GUNICORN_BIND_HOST="127.0.0.1",
        LOG_FORMAT="console",
    )
    base = {
        k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ
    }
    return {
        **base,
        **values,
        "HOME": str(var),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


# --- The processes of deploy/compose.yaml ------------------------------------------

BUNDLE = """
import shutil, sys
from pathlib import Path
import modelgen
root = Path(sys.argv[1])
texts = [
    "The library opens at nine and closes at six on weekdays.",
    "Apply for a parking permit online or at the town hall.",
    "Household waste is collected every Tuesday morning.",
    "You can renew your passport at the civil registry office.",
] * 8
tokenizer = modelgen.train_tokenizer(texts, 300)
cfg = modelgen.LMConfig(vocab_size=320, hidden_size=32, num_layers=2, num_heads=4,
                        num_kv_heads=2, intermediate_size=64,
                        max_position_embeddings=256)
bundle = modelgen.write_lm_bundle(root / "bundle", cfg, modelgen.init_weights(cfg, 0),
                                  tokenizer)
print(shutil.make_archive(str(root / "tiny-lm"), "zip", bundle))
"""

# Through the services, as any script must; the password is then used over HTTP.
SETUP = """
import os
from django.contrib.auth import get_user_model
from governance.services.suites import builtin_suites_sync
from registry import services
from registry.models import Role
User = get_user_model()
admin = User.objects.create_superuser("check-admin", "admin@check.invalid", None)
agency = services.agency_create(actor=admin, name="Deploy check agency",
                                slug="deploy-check", jurisdiction="FR")
member = User.objects.create_user("check-member", "member@check.invalid",
                                  os.environ["CHECK_MEMBER_PASSWORD"])
services.membership_add(actor=admin, agency=agency, user=member, role=Role.MAINTAINER)
builtin_suites_sync(admin=admin)
"""


def prepare(runner: Runner, db: dict, work: Path) -> None:
    """The owner's work, as compose's `migrate` service does it, and the image's.

    ``collectstatic`` (the image build's step; compressing every file takes
    the longest) runs meanwhile, touching no database.
    """
    runner.start("collectstatic", "manage.py", "collectstatic", "--noinput",
                 log_dir=work / "logs")  # fmt: skip
    owner = {"DATABASE_URL_FILE": "", "DATABASE_URL": db["owner_url"]}
    runner.run("manage.py", "migrate", "--noinput", env=owner)
    runner.run("manage.py", "createcachetable", env=owner)
    runner.run("deploy/grants.py", "--app-role", db["app_role"], env=owner)
    runner.run("manage.py", "mlflow_migrate", env=owner)
    collect = runner.procs.pop("collectstatic")
    if collect.wait(timeout=600) != 0:
        raise CheckFailed("collectstatic failed:\n" + runner.tails())
    log("migrated as the owner role; app role granted; static files collected")


def start_processes(runner: Runner, work: Path, ports: dict) -> None:
    """Gunicorn, a worker per queue and beat, as compose starts them."""
    logs = work / "logs"
    queue = runner.env["CELERY_TASK_DEFAULT_QUEUE"]
    runner.start(
        "web", "-m", "gunicorn", "config.wsgi:application",
        "--config", "deploy/gunicorn.conf.py", log_dir=logs,
    )  # fmt: skip
    housekeeping = f"{queue}-housekeeping"
    for name, q in (("worker", queue), ("worker-housekeeping", housekeeping)):
        runner.start(
            name, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
            "--concurrency", "1", "--queues", q, "--hostname", f"{name}@deploy-check",
            log_dir=logs,
        )  # fmt: skip
    runner.start(
        "beat", "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
        "--pidfile", str(work / "var" / "beat.pid"), log_dir=logs,
    )  # fmt: skip


def start_mlflow(runner: Runner, work: Path, ports: dict) -> None:
    """A real MLflow tracking server, with compose's --allowed-hosts (and ours)."""
    mlflow_dir = work / "mlflow"
    runner.start(
        "mlflow", "-m", "mlflow", "server", "--host", "127.0.0.1",
        "--port", str(ports["mlflow"]), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        "--artifacts-destination", str(mlflow_dir / "artifacts"),
        "--allowed-hosts",
        f"{MLFLOW_PUBLIC_HOST},127.0.0.1:{ports['mlflow']},localhost:{ports['mlflow']}",
        log_dir=work / "logs", env=MLFLOW_ENV,
    )  # fmt: skip


class Api:
    """HTTP to the web process, as through a TLS-terminating proxy."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.token = ""

    def call(self, method, path, *, body=None, headers=None, data=None):
        head = {"Host": "127.0.0.1", "X-Forwarded-Proto": "https"}
        if self.token:
            head["Authorization"] = f"Token {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
            head["Content-Type"] = "application/json"
        head.update(headers or {})
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=head
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except OSError as error:  # not listening yet, reset, timed out
            return 0, str(error)
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw

    def expect(self, status_ok, method, path, **kwargs):
        status, payload = self.call(method, path, **kwargs)
        if status not in status_ok:
            raise CheckFailed(f"{method} {path} answered {status}: {payload!r:.600}")
        return payload


def check_services(runner: Runner, api: Api, ports: dict) -> None:
    """Everything answers: /healthz, static files, both workers, MLflow's hosts."""

    def healthy():
        runner.alive()
        return api.call("GET", "/healthz")[0] == 200

    wait_for(healthy, timeout=240, what="web's /healthz to answer 200")
    api.expect({200}, "GET", "/static/admin/css/base.css")
    runner.run("deploy/healthcheck.py", "web")  # the image's HEALTHCHECK
    log("web healthy; the admin's CSS is served")
    for node in ("worker@deploy-check", "worker-housekeeping@deploy-check"):
        runner.run("deploy/healthcheck.py", "worker", "--node", node, "--timeout", "10")
    log("both workers answer `celery inspect ping`")
    ml = f"http://127.0.0.1:{ports['mlflow']}"
    for host, wanted in ((MLFLOW_PUBLIC_HOST, 0), ("attacker.example", 1)):
        args = ("deploy/healthcheck.py", "mlflow", "--url", ml, "--host-header", host)
        command = [*runner._prefix(), runner.python, *args]
        got = subprocess.run(command, cwd=runner.src, env=runner.env,
                             capture_output=True, timeout=60).returncode  # fmt: skip
        if got != wanted:
            raise CheckFailed(f"MLflow /health with Host {host}: exit {got}")
    log(f"MLflow accepts Host {MLFLOW_PUBLIC_HOST} and refuses others (403)")


def upload_and_evaluate(runner: Runner, api: Api, work: Path) -> int:
    """Token, licence, model, version, upload, evaluation: the evaluation's id."""
    password = secrets.token_urlsafe(16)
    runner.run("manage.py", "shell", "-c", SETUP,
               env={"CHECK_MEMBER_PASSWORD": password})  # fmt: skip
    import base64

    basic = base64.b64encode(f"check-member:{password}".encode()).decode()
    token = api.expect({201}, "POST", "/api/v1/auth/tokens/",
                       headers={"Authorization": f"Basic {basic}"})  # fmt: skip
    api.token = token["token"]
    log("token created over HTTP with the member's password")
    api.expect({200, 201}, "POST", "/api/v1/licences/", body={"expression": "MIT"})
    model = api.expect({201}, "POST", "/api/v1/models/", body={
        "name": "Deploy check model", "slug": "deploy-check-model",
        "task": "text-generation", "intended_use": "Proving a deployment.",
    })  # fmt: skip
    version = api.expect({201}, "POST", "/api/v1/model-versions/", body={
        "model": model["id"], "version": "1.0.0", "licence": "MIT",
    })  # fmt: skip
    made = runner.run("-c", BUNDLE, str(work / "bundle"))
    archive = Path(made.strip().splitlines()[-1])
    path = f"/api/v1/model-versions/{version['id']}/artifact/"
    api.expect({202}, "PUT", path, data=archive.read_bytes(), headers={
        "Content-Type": "application/octet-stream",
        "Content-Disposition": 'attachment; filename="tiny-lm.zip"',
    })  # fmt: skip

    def verified():
        runner.alive()
        state = api.expect({200}, "GET", path).get("artifact_state")
        if state == "failed":
            raise CheckFailed(f"the artifact was refused: {api.call('GET', path)[1]}")
        return state == "available"

    wait_for(verified, timeout=180, what="the uploaded bundle to be verified")
    log(f"bundle uploaded and verified by the worker (version {version['id']})")
    asked = f"/api/v1/model-versions/{version['id']}/evaluations/"
    run = api.expect({202}, "POST", asked, body={"suite": SUITE})

    def finished():
        runner.alive()
        found = api.expect({200}, "GET", f"/api/v1/evaluations/{run['id']}/")
        ended = found["status"] in {"succeeded", "failed", "cancelled"}
        return found if ended else None

    done = wait_for(finished, timeout=240, what="the evaluation to finish")
    if done["status"] != "succeeded":
        raise CheckFailed(f"the evaluation ended {done['status']}: {done!r:.800}")
    log(f"evaluation {run['id']} succeeded on suite {SUITE}")
    return run["id"]


def check_mlflow_run(ports: dict, experiment: str, run_id: int) -> None:
    """The run is in the MLflow server, read back over HTTP."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{ports['mlflow']}")

    def logged():
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`civitas.evaluation_run_id` = '{run_id}'",
        )
        return runs if runs and runs[0].info.status == "FINISHED" else None

    runs = wait_for(logged, timeout=120, interval=2, what="the run in MLflow")
    if len(runs) != 1 or not runs[0].data.metrics:
        raise CheckFailed(f"MLflow holds {len(runs)} runs for evaluation {run_id}")
    names = ", ".join(sorted(runs[0].data.metrics)[:3])
    log(f"MLflow server holds the run ({runs[0].info.run_id}; metrics {names}...)")


def check_audit(runner: Runner, db: dict) -> None:
    """verify_audit passes as the app role; the role cannot rewrite the chain."""
    out = runner.run("manage.py", "verify_audit")
    log(f"verify_audit: {out.strip().splitlines()[-1] if out.strip() else 'ok'}")
    for sql in (
        "UPDATE governance_auditevent SET action = action",
        "SET session_replication_role = replica",
    ):
        result = psql(db["app_url"], "-c", sql, check=False)
        if result.returncode == 0 or "denied" not in result.stderr:
            raise CheckFailed(f"the app role was allowed: {sql} ({result.stderr})")
    log("the app role is refused UPDATE on the audit chain and replica mode")


def clear_queues(redis_url: str, queue: str) -> None:
    """Remove this check's queues from Redis (the database is shared)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    with contextlib.suppress(redis.RedisError):
        for name in (queue, f"{queue}-housekeeping"):
            client.delete(name, *client.keys(f"{name}\x06\x16*"))


def deploy_check(args) -> int:
    """Run every step; 0 when all passed."""
    started = time.monotonic()
    user = unprivileged_user()
    work = Path(tempfile.mkdtemp(prefix="civitas-deploy-check-"))
    work.chmod(0o755)
    dbname = f"civitas_check_{secrets.token_hex(4)}"
    runner = None
    try:
        src = work / "src"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(src)], check=True)
        for d in ("var", "logs", "mlflow", "drop", "bundle"):
            (work / d).mkdir()
            if user is not None:
                os.chown(work / d, user.pw_uid, user.pw_gid)
        if user is not None:
            os.chown(work, user.pw_uid, user.pw_gid)
        python, extra = (
            bridge_python(work, user) if user is not None else (sys.executable, {})
        )
        who = user.pw_name if user else pwd.getpwuid(os.geteuid()).pw_name
        log(f"clean clone at {src}; running as {who}")
        db = create_database(args.superuser_url, dbname)
        log(f"fresh database {dbname}: roles {db['owner_role']} and {db['app_role']}")
        ports = {"web": free_port(), "mlflow": free_port()}
        runner = Runner(src=src, python=python, user=user)
        runner.env = platform_env(src=src, work=work, db=db, args=args,
                                  ports=ports, user=user)  # fmt: skip
        runner.env.update(extra)
        start_mlflow(runner, work, ports)  # slow to start: meanwhile, migrate
        prepare(runner, db, work)
        start_processes(runner, work, ports)
        api = Api(ports["web"])
        check_services(runner, api, ports)
        run_id = upload_and_evaluate(runner, api, work)
        check_mlflow_run(ports, runner.env["MLFLOW_EXPERIMENT"], run_id)
        check_audit(runner, db)
        runner.alive()
    except (CheckFailed, subprocess.SubprocessError, OSError) as error:
        log(f"FAILED: {error}")
        if runner is not None:
            print(runner.tails(), flush=True)
        return 1
    finally:
        if runner is not None:
            runner.stop_all()
            queue = runner.env.get("CELERY_TASK_DEFAULT_QUEUE", "")
            clear_queues(args.redis_url, queue)
        drop_database(args.superuser_url, dbname)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(f"PASSED in {time.monotonic() - started:.0f} s; everything torn down")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--superuser-url",
        default=os.environ.get(
            "DEPLOY_CHECK_SUPERUSER_URL", "postgres://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL superuser's URL (creates and drops the database and roles)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("DEPLOY_CHECK_REDIS_URL", "redis://127.0.0.1:6379/7"),
        help="the Redis database for the broker and the cache",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return deploy_check(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
