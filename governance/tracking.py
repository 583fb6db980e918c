"""The one module that talks to MLflow; callers get plain values back.

MLflow is the lineage record of evaluations: each run is logged with its
inputs (dataset digests), parameters, metrics and artifacts. The tracking URI
and artifact root come from settings, read at call time.
"""

from __future__ import annotations

import functools

from django.conf import settings


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
