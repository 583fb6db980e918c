"""The one module that talks to MLflow; callers get plain values back.

MLflow is the lineage record of evaluations: each run is logged with its
inputs (dataset digests, as MLflow dataset inputs), parameters (suite,
artifact digest, runtime settings), metrics, and the environment and
per-item results as artifacts, tagged with the registry ids it belongs to.
The tracking URI and artifact root come from settings, read at call time.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field

from django.conf import settings

# MLflow caps a parameter value at 6000 characters and a key at 250.
_PARAM_MAX = 6000


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


@dataclass(frozen=True)
class LoggedRun:
    """What MLflow returned for a logged run, as our own value."""

    run_id: str
    experiment_id: str
    artifact_uri: str


@functools.lru_cache(maxsize=4)
def _client(tracking_uri: str):
    """Return a cached MlflowClient: creating a SQL store runs its migrations check."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def client():
    """The MlflowClient for the configured tracking URI."""
    return _client(settings.MLFLOW_TRACKING_URI)


def ping(*, timeout: float = 3.0) -> None:
    """Raise if the MLflow tracking store cannot answer a trivial query.

    A tracking server is asked for its ``/health`` page with a short timeout,
    because MLflow's own HTTP client retries with backoff for minutes. A
    database-backed store is asked for one experiment.
    """
    uri = settings.MLFLOW_TRACKING_URI
    if uri.startswith(("http://", "https://")):
        import requests

        requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
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


def log_evaluation(record: EvaluationRecord) -> LoggedRun:
    """Log one finished evaluation as an MLflow run and return its ids."""
    from mlflow.entities import (
        Dataset,
        DatasetInput,
        InputTag,
        Metric,
        Param,
        RunTag,
    )

    mlflow_client = client()
    run = mlflow_client.create_run(
        _experiment_id(settings.MLFLOW_EXPERIMENT),
        run_name=record.run_name,
        tags=record.tags,
    )
    run_id = run.info.run_id
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
        mlflow_client.log_inputs(
            run_id,
            datasets=[
                DatasetInput(
                    Dataset(
                        name=ref.name,
                        digest=ref.digest[:36],
                        source_type="civitas",
                        source=json.dumps({"uri": ref.source, "sha256": ref.digest}),
                    ),
                    tags=[InputTag("mlflow.data.context", ref.context)],
                )
                for ref in record.datasets
            ],
        )
    for path, content in record.json_artifacts.items():
        mlflow_client.log_dict(run_id, content, path)
    for path, text in record.text_artifacts.items():
        mlflow_client.log_text(run_id, text, path)
    mlflow_client.set_terminated(
        run_id, status="FAILED" if record.failed else "FINISHED"
    )
    return LoggedRun(
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        artifact_uri=run.info.artifact_uri,
    )


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
    """The ``/healthz`` part for the MLflow store: ``ping`` within the budget."""
    ping(timeout=settings.HEALTHCHECK_TIMEOUT_SECONDS)
