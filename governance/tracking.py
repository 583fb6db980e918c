"""The one module that talks to MLflow; callers get plain values back.

MLflow is the lineage record of evaluations: each run is logged with its
inputs (dataset digests, as MLflow dataset inputs), parameters (suite,
artifact digest, runtime settings), metrics, and the environment and
per-item results as artifacts, tagged with the registry ids it belongs to.
The tracking URI and artifact root come from settings, read at call time.

A database-backed store (the embedded SQLite one of ``make run``) is created
and migrated once, by ``manage.py mlflow_migrate`` before any process that
uses it starts; every first open in a process also holds an inter-process
file lock, so that processes starting together never run MLflow's schema
migrations at the same time (they race on SQLite and can leave the store
half-migrated for good).

Every call to a tracking server is bounded: ``client()`` sets MLflow's HTTP
timeout, retry count and backoff (``MLFLOW_HTTP_REQUEST_*``) from the
settings, because MLflow's defaults retry for minutes. Evaluations never call
MLflow while they finish: they leave an outbox message that
``governance.services.outbox`` delivers with ``log_evaluation(key=...)``,
which finds the run an earlier attempt made by its ``civitas.outbox_key`` tag
instead of making a second one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

# MLflow caps a parameter value at 6000 characters and a key at 250.
_PARAM_MAX = 6000
# The tag that names the outbox message a run was logged for.
OUTBOX_KEY_TAG = "civitas.outbox_key"
RUN_ID_TAG = "civitas.evaluation_run_id"
_TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
# MLflow's HTTP client reads these from the environment at each request.
_HTTP_LIMITS = (
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
)


@dataclass(frozen=True)
class DatasetRef:
    """A dataset an evaluation read: its registry name and content digest."""

    name: str
    digest: str
    source: str
    context: str = "evaluation"


@dataclass(frozen=True)
class EvaluationRecord:
    """Everything an evaluation run leaves in MLflow."""

    run_name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    datasets: list[DatasetRef] = field(default_factory=list)
    json_artifacts: dict[str, dict] = field(default_factory=dict)
    text_artifacts: dict[str, str] = field(default_factory=dict)
    failed: bool = False
    # Artifact path in MLflow -> key in the ``artifacts`` storage, streamed
    # at delivery so that large files never sit in the outbox row.
    stored_artifacts: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The record as JSON for an outbox message's payload."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> EvaluationRecord:
        """The record an outbox message's payload holds."""
        refs = [DatasetRef(**ref) for ref in data.get("datasets", [])]
        return cls(**{**data, "datasets": refs})


@dataclass(frozen=True)
class LoggedRun:
    """What MLflow returned for a logged run, as our own value."""

    run_id: str
    experiment_id: str
    artifact_uri: str


def _is_server(uri: str) -> bool:
    """Whether the URI names a tracking server, which migrates its own store."""
    return uri.startswith(("http://", "https://"))


def _lock_path(uri: str) -> Path:
    """The lock file beside a SQLite store; under ``VAR_DIR`` for other databases."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///").split("?", 1)[0] + ".lock")
    digest = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]
    return Path(settings.VAR_DIR) / f"mlflow-store-{digest}.lock"


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive inter-process lock on a database store's first open.

    ``fcntl.flock`` on a lock file: released when the holder closes it or
    dies, so a killed process never leaves the store locked.
    """
    path = _lock_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=4)
def _client(tracking_uri: str):
    """Return a cached MlflowClient: creating a SQL store runs its migrations check.

    The first open of a database store holds ``store_lock``: MLflow creates
    the tables of an empty store there, and two processes must not.
    """
    from mlflow.tracking import MlflowClient

    if _is_server(tracking_uri):
        return MlflowClient(tracking_uri=tracking_uri)
    with store_lock(tracking_uri):
        return MlflowClient(tracking_uri=tracking_uri)


def store_migrate() -> str:
    """Create or upgrade the configured MLflow store's schema; say what was done.

    What ``manage.py migrate`` is for the database, for a database-backed
    tracking store: run once before web, worker and beat start. A tracking
    server migrates its own store, so nothing is done for one. Holds
    ``store_lock``; raises MLflow's errors if the schema cannot be brought to
    MLflow's head revision.
    """
    uri = settings.MLFLOW_TRACKING_URI
    if _is_server(uri):
        return "MLflow tracking server: it migrates its own store."
    from mlflow.store.db import utils as db_utils

    with store_lock(uri):
        db_utils._make_parent_dirs_if_sqlite(uri)
        engine = db_utils.create_sqlalchemy_engine_with_retry(uri)
        try:
            before = db_utils._get_schema_version(engine)
            if not db_utils._all_tables_exist(engine):
                db_utils._initialize_tables(engine)
            else:
                db_utils._upgrade_db(engine)
            db_utils._verify_schema(engine)
            after = db_utils._get_schema_version(engine)
        finally:
            engine.dispose()
    if before is None:
        return f"MLflow store created at schema revision {after}."
    if before != after:
        return f"MLflow store migrated from revision {before} to {after}."
    return f"MLflow store up to date (revision {after})."


def apply_http_limits() -> None:
    """Give MLflow's HTTP client the timeout and retries of the settings.

    MLflow reads ``MLFLOW_HTTP_REQUEST_*`` from the environment at each
    request; its defaults (120 s, 7 retries) hold a worker for minutes.
    """
    for name in _HTTP_LIMITS:
        os.environ[name] = str(getattr(settings, name))


def client():
    """The MlflowClient for the configured tracking URI, with bounded HTTP calls."""
    apply_http_limits()
    return _client(settings.MLFLOW_TRACKING_URI)


def _probe_server(uri: str, *, timeout: float) -> None:
    """Ask a tracking server's API for one experiment, once, within ``timeout``.

    The API, not ``/health``: MLflow answers ``/health`` whatever the Host
    header, while refusing every API call from a host it does not allow (403).
    Plain ``requests`` with MLflow's documented credential variables rather
    than MLflow's own request helper: that helper imports most of MLflow on
    first use, seconds that a health check's budget cannot absorb.
    """
    import requests

    headers = {}
    auth = None
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if username and password:
        auth = (username, password)
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        verify = False
    response = requests.get(
        uri.rstrip("/") + "/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers=headers,
        auth=auth,
        verify=verify,
        timeout=timeout,
        allow_redirects=False,
    )
    response.raise_for_status()


def ping(*, timeout: float = 3.0) -> None:
    """Raise if the MLflow tracking store cannot answer a trivial query.

    A tracking server is asked one API question once, with ``timeout`` for
    connecting and for the answer; a database-backed store is asked for one
    experiment.
    """
    uri = settings.MLFLOW_TRACKING_URI
    if _is_server(uri):
        _probe_server(uri, timeout=timeout)
        return
    client().search_experiments(max_results=1)


def _experiment_id(name: str) -> str:
    """The id of the named experiment, created on first use."""
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    uri = settings.MLFLOW_TRACKING_URI
    # A tracking server decides where artifacts go; a database store needs a root.
    location = (
        None
        if uri.startswith(("http://", "https://"))
        else (settings.MLFLOW_ARTIFACT_ROOT.rstrip("/") + "/" + name)
    )
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:
        # Another worker created it between the lookup and the create.
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _find_run(mlflow_client, experiment_id: str, key: str):
    """The active run logged for outbox message ``key``, if an attempt made one."""
    runs = mlflow_client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{OUTBOX_KEY_TAG}` = '{key}'",
        max_results=1,
    )
    return runs[0] if runs else None


def log_evaluation(record: EvaluationRecord, *, key: str = "") -> LoggedRun:
    """Log one finished evaluation as an MLflow run and return its ids.

    With ``key`` (an outbox message's dedupe key) it is safe to call again:
    a run already tagged with the key is finished if an earlier attempt
    stopped halfway, and returned as it is if it was finished.
    """
    mlflow_client = client()
    experiment_id = _experiment_id(settings.MLFLOW_EXPERIMENT)
    run = _find_run(mlflow_client, experiment_id, key) if key else None
    if run is None:
        tags = {**record.tags, OUTBOX_KEY_TAG: key} if key else record.tags
        run = mlflow_client.create_run(
            experiment_id, run_name=record.run_name, tags=tags
        )
    if run.info.status not in _TERMINAL:
        _log_contents(mlflow_client, run.info.run_id, record)
        mlflow_client.set_terminated(
            run.info.run_id, status="FAILED" if record.failed else "FINISHED"
        )
    return LoggedRun(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        artifact_uri=run.info.artifact_uri,
    )


def _log_contents(mlflow_client, run_id: str, record: EvaluationRecord) -> None:
    """Metrics, parameters, dataset inputs and artifacts of one run."""
    from mlflow.entities import Metric, Param, RunTag

    now_ms = int(time.time() * 1000)
    mlflow_client.log_batch(
        run_id,
        metrics=[
            Metric(key, float(value), now_ms, 0)
            for key, value in sorted(record.metrics.items())
        ],
        params=[
            Param(key, str(value)[:_PARAM_MAX])
            for key, value in sorted(record.params.items())
        ],
        tags=[RunTag("civitas.logged_by", "civitas-worker")],
    )
    if record.datasets:
        log_dataset_inputs(mlflow_client, run_id, record.datasets)
    for path, content in record.json_artifacts.items():
        mlflow_client.log_dict(run_id, content, path)
    for path, text in record.text_artifacts.items():
        mlflow_client.log_text(run_id, text, path)
    for path, storage_key in record.stored_artifacts.items():
        _log_stored(mlflow_client, run_id, path, storage_key)


def _log_stored(mlflow_client, run_id: str, path: str, storage_key: str) -> None:
    """Stream one file of the artifact store into the run as ``path``."""
    from django.core.files.storage import storages

    with tempfile.TemporaryDirectory(prefix="civitas-mlflow-") as tmp:
        local = Path(tmp) / Path(path).name
        with (
            storages["artifacts"].open(storage_key, "rb") as source,
            open(local, "wb") as target,
        ):
            shutil.copyfileobj(source, target, length=1 << 20)
        directory = str(Path(path).parent)
        mlflow_client.log_artifact(
            run_id, str(local), None if directory == "." else directory
        )


@dataclass(frozen=True)
class LoggedSummary:
    """One run of the experiment as the drift check sees it."""

    run_id: str
    evaluation_run_id: str
    metrics: dict[str, float]


def experiment_runs() -> list[LoggedSummary]:
    """Every active run of the evaluations experiment, with its Civitas run id.

    Pages through ``search_runs``; an experiment not made yet has no runs.
    """
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(settings.MLFLOW_EXPERIMENT)
    if experiment is None:
        return []
    found: list[LoggedSummary] = []
    token = None
    while True:
        page = mlflow_client.search_runs(
            [experiment.experiment_id], max_results=1000, page_token=token
        )
        found.extend(
            LoggedSummary(
                run_id=run.info.run_id,
                evaluation_run_id=run.data.tags.get(RUN_ID_TAG, ""),
                metrics=dict(run.data.metrics),
            )
            for run in page
        )
        token = page.token
        if not token:
            return found


@dataclass(frozen=True)
class RunSummary:
    """A logged run read back from MLflow."""

    run_id: str
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    dataset_digests: list[str]
    artifacts: list[str]


def read_run(run_id: str) -> RunSummary:
    """Read a logged run back: for the API, the portal and the tests."""
    mlflow_client = client()
    run = mlflow_client.get_run(run_id)
    inputs = run.inputs.dataset_inputs if run.inputs else []
    sources = [json.loads(item.dataset.source) for item in inputs]
    artifacts: list[str] = []
    pending = [""]
    while pending:
        for entry in mlflow_client.list_artifacts(run_id, pending.pop() or None):
            (pending if entry.is_dir else artifacts).append(entry.path)
    return RunSummary(
        run_id=run_id,
        status=run.info.status,
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        dataset_digests=[source["sha256"] for source in sources],
        artifacts=sorted(artifacts),
    )


def health_check() -> None:
    """The ``/healthz`` part for the MLflow store: ``ping`` within the budget.

    A server that never answers fails after ``HEALTHCHECK_TIMEOUT_SECONDS``;
    one that refuses Civitas's Host header (403) is reported down.
    """
    ping(timeout=settings.HEALTHCHECK_TIMEOUT_SECONDS)


# --- datasets -----------------------------------------------------------------------

DATASET_VERSION_TAG = "civitas.dataset_version_id"
# The datasheet's facts, as the schema of the MLflow dataset: the files' own
# columns are not read (a dataset version may be any file).
_DATASHEET_COLUMNS = (
    "licence",
    "origin_jurisdiction",
    "personal_data",
    "languages",
    "record_count",
)


def _dataset_entity(ref: DatasetRef):
    """The MLflow dataset of a Civitas dataset version: name, digest, source, schema.

    Built with ``mlflow.data``'s ``MetaDataset``, so that the dataset logged
    at registration and the one attached to each run that read it are the
    same entity (same name, digest and source).
    """
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    class CivitasSource(DatasetSource):
        """A dataset version of the Civitas registry, by URI and SHA-256."""

        @staticmethod
        def _get_source_type() -> str:
            return "civitas"

        def load(self, **kwargs):
            raise NotImplementedError("read the file through the Civitas API")

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source):
            raise NotImplementedError

        def to_dict(self) -> dict:
            return {"uri": ref.source, "sha256": ref.digest}

        @classmethod
        def from_dict(cls, source_dict):
            return cls()

    schema = Schema(
        [
            ColSpec("long" if column == "record_count" else "string", column)
            for column in _DATASHEET_COLUMNS
        ]
    )
    return MetaDataset(
        CivitasSource(), name=ref.name, digest=ref.digest[:36], schema=schema
    )._to_mlflow_entity()


def log_dataset_inputs(mlflow_client, run_id: str, refs: list[DatasetRef]) -> None:
    """Attach datasets to a run as inputs, each with its context (MLflow dedupes)."""
    from mlflow.entities import DatasetInput, InputTag

    mlflow_client.log_inputs(
        run_id,
        datasets=[
            DatasetInput(
                _dataset_entity(ref),
                tags=[InputTag("mlflow.data.context", ref.context)],
            )
            for ref in refs
        ],
    )


def datasets_experiment() -> str:
    """The experiment holding one registration run per dataset version."""
    return f"{settings.MLFLOW_EXPERIMENT}.datasets"


def log_dataset_version(
    ref: DatasetRef, *, dataset_version_id: int, key: str
) -> LoggedRun:
    """Log a dataset version as an MLflow dataset, on its registration run.

    The run (experiment ``datasets_experiment()``) is found again by the
    outbox ``key``, so a repeated delivery logs nothing twice.
    """
    mlflow_client = client()
    experiment_id = _experiment_id(datasets_experiment())
    run = _find_run(mlflow_client, experiment_id, key)
    if run is None:
        run = mlflow_client.create_run(
            experiment_id,
            run_name=f"dataset {ref.name}",
            tags={OUTBOX_KEY_TAG: key, DATASET_VERSION_TAG: str(dataset_version_id)},
        )
    if run.info.status not in _TERMINAL:
        log_dataset_inputs(
            mlflow_client,
            run.info.run_id,
            [dataclasses.replace(ref, context="registration")],
        )
        mlflow_client.set_terminated(run.info.run_id, status="FINISHED")
    return LoggedRun(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        artifact_uri=run.info.artifact_uri,
    )


# --- the model registry -------------------------------------------------------------

MODEL_VERSION_TAG = "civitas.model_version_id"
STATUS_TAG = "civitas.status"
DECISION_TAG_PREFIX = "civitas.decision."
MANAGED_TAG = "civitas.managed"
# The aliases that follow a version's status: one per status value.
STATUS_ALIASES = ("draft", "in_review", "approved", "suspended", "retired")


@dataclass(frozen=True)
class VersionSpec:
    """What a Civitas model version is in MLflow's model registry.

    ``tags`` are the ``civitas.*`` tags the sync owns (digest, licence,
    jurisdictions, status, evaluation run ids); decision tags are set apart.
    ``training_datasets`` are attached to the training run when it exists.
    """

    name: str
    model_version_id: int
    source: str
    description: str
    tags: dict[str, str]
    training_run_id: str = ""
    training_datasets: list[DatasetRef] = field(default_factory=list)


@dataclass(frozen=True)
class RegisteredVersion:
    """A Civitas model version as MLflow's model registry holds it."""

    name: str
    version: str
    model_version_id: str
    run_id: str
    tags: dict[str, str]
    aliases: list[str]


def _registered(mv, aliases: list[str]) -> RegisteredVersion:
    return RegisteredVersion(
        name=mv.name,
        version=str(mv.version),
        model_version_id=mv.tags.get(MODEL_VERSION_TAG, ""),
        run_id=mv.run_id or "",
        tags=dict(mv.tags),
        aliases=sorted(aliases),
    )


def _ensure_registered_model(mlflow_client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(name, tags={MANAGED_TAG: "true"})
        except MlflowException:
            # Created by another deliverer between the lookup and the create.
            mlflow_client.get_registered_model(name)


def _find_version(mlflow_client, name: str, model_version_id: int):
    found = mlflow_client.search_model_versions(
        f"name = '{name}' and tags.`{MODEL_VERSION_TAG}` = '{model_version_id}'"
    )
    return min(found, key=lambda mv: int(mv.version)) if found else None


def _training_run(mlflow_client, run_id: str) -> str:
    """``run_id`` if MLflow knows the run, else "" (the tag still names it)."""
    from mlflow.exceptions import MlflowException

    run_id = run_id.removeprefix("runs:/").split("/", 1)[0].strip()
    if not run_id:
        return ""
    try:
        return mlflow_client.get_run(run_id).info.run_id
    except MlflowException:
        return ""


def register_version(spec: VersionSpec) -> RegisteredVersion:
    """Make or bring up to date the registered model version of ``spec``.

    Found again by its ``civitas.model_version_id`` tag, so safe to repeat.
    A training run MLflow knows becomes the version's source run (and gets
    the training datasets as inputs). Then every status alias of the
    registered model is moved (``align_status_aliases``).
    """
    mlflow_client = client()
    _ensure_registered_model(mlflow_client, spec.name)
    tags = {**spec.tags, MODEL_VERSION_TAG: str(spec.model_version_id)}
    mv = _find_version(mlflow_client, spec.name, spec.model_version_id)
    run_id = _training_run(mlflow_client, spec.training_run_id)
    if mv is None:
        mv = mlflow_client.create_model_version(
            spec.name,
            source=spec.source,
            run_id=run_id or None,
            tags=tags,
            description=spec.description,
        )
    else:
        for key, value in tags.items():
            if mv.tags.get(key) != value:
                mlflow_client.set_model_version_tag(spec.name, mv.version, key, value)
        for key in set(mv.tags) - set(tags):
            if key.startswith("civitas.") and not key.startswith(DECISION_TAG_PREFIX):
                mlflow_client.delete_model_version_tag(spec.name, mv.version, key)
    if run_id and spec.training_datasets:
        log_dataset_inputs(mlflow_client, run_id, spec.training_datasets)
    align_status_aliases(spec.name)
    return read_version(spec.name, spec.model_version_id)


def align_status_aliases(name: str) -> dict[str, str]:
    """Point each status alias at the newest version tagged with that status.

    MLflow lets an alias name one version of a registered model, so the
    ``approved`` alias names the newest (highest MLflow number) approved
    version; an alias whose status no version has is removed. Returns the
    aliases as they now are.
    """
    mlflow_client = client()
    versions = mlflow_client.search_model_versions(f"name = '{name}'")
    newest: dict[str, int] = {}
    for mv in versions:
        status = mv.tags.get(STATUS_TAG, "")
        if status in STATUS_ALIASES:
            newest[status] = max(newest.get(status, 0), int(mv.version))
    current = mlflow_client.get_registered_model(name).aliases or {}
    for alias in STATUS_ALIASES:
        want = newest.get(alias)
        have = current.get(alias)
        if want is not None and str(have) != str(want):
            mlflow_client.set_registered_model_alias(name, alias, str(want))
        elif want is None and have is not None:
            mlflow_client.delete_registered_model_alias(name, alias)
    return {alias: str(version) for alias, version in newest.items()}


def set_decision_tag(
    spec: VersionSpec, *, decision_id: int, value: dict[str, str]
) -> RegisteredVersion:
    """Register ``spec`` if needed and tag its MLflow version with a decision."""
    registered = _find_version(client(), spec.name, spec.model_version_id)
    if registered is None:
        register_version(spec)
        registered = _find_version(client(), spec.name, spec.model_version_id)
    client().set_model_version_tag(
        spec.name,
        registered.version,
        f"{DECISION_TAG_PREFIX}{decision_id}",
        json.dumps(value, sort_keys=True, separators=(",", ":")),
    )
    return read_version(spec.name, spec.model_version_id)


def read_version(name: str, model_version_id: int) -> RegisteredVersion | None:
    """The registered version of a Civitas model version, with its aliases."""
    mlflow_client = client()
    mv = _find_version(mlflow_client, name, model_version_id)
    if mv is None:
        return None
    aliases = mlflow_client.get_registered_model(name).aliases or {}
    return _registered(
        mv, [alias for alias, v in aliases.items() if str(v) == str(mv.version)]
    )


def registered_versions() -> list[RegisteredVersion]:
    """Every version of every registered model Civitas manages, with its aliases."""
    mlflow_client = client()
    found: list[RegisteredVersion] = []
    models = mlflow_client.search_registered_models(
        filter_string=f"tags.`{MANAGED_TAG}` = 'true'", max_results=1000
    )
    for model in models:
        by_version: dict[str, list[str]] = defaultdict(list)
        for alias, version in (model.aliases or {}).items():
            by_version[str(version)].append(alias)
        versions = mlflow_client.search_model_versions(
            f"name = '{model.name}'", max_results=10000
        )
        found.extend(_registered(mv, by_version[str(mv.version)]) for mv in versions)
    return found
