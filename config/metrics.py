"""``GET /metrics``: the platform's gauges in the Prometheus text format.

``config`` imports no app: an app adds its gauges with ``register_gauge`` in
its ``AppConfig.ready``, as it adds a part to ``/healthz``. A gauge's
``collect()`` returns an iterable of ``(labels, value)`` pairs and runs at each
scrape, so it must stay cheap (one aggregate query) and bound any outbound
call. A gauge that raises is left out of that scrape and counted in
``civitas_metrics_collect_errors{gauge="..."}``; the scrape still answers.

The page is not public: it answers a bearer of ``METRICS_TOKEN``
(``Authorization: Bearer <token>``), or a signed-in staff user; anyone else
gets 404 (401 for a wrong bearer token), so the public cannot tell it exists.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.http import Http404, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

Sample = tuple[Mapping[str, str], float]


@dataclass(frozen=True)
class Gauge:
    """A registered gauge: its name, help text and the function that reads it."""

    name: str
    documentation: str
    collect: Callable[[], Iterable[Sample]]


GAUGES: dict[str, Gauge] = {}


def register_gauge(
    name: str, documentation: str, collect: Callable[[], Iterable[Sample]]
) -> None:
    """Add a gauge to ``/metrics``; registering a name again replaces it.

    ``collect()`` returns ``(labels_dict, value)`` pairs; every pair of one
    gauge must use the same label names.
    """
    GAUGES[name] = Gauge(name, documentation, collect)


class _Collector:
    """Turns the registered gauges into Prometheus metric families at scrape time."""

    def collect(self):
        errors = GaugeMetricFamily(
            "civitas_metrics_collect_errors",
            "Gauges that failed to collect in this scrape (1 each)",
            labels=["gauge"],
        )
        for gauge in list(GAUGES.values()):
            try:
                samples = [(dict(labels), float(value))
                           for labels, value in gauge.collect()]
            except Exception:  # one broken gauge must not empty the page
                logger.warning("metrics gauge %s failed", gauge.name, exc_info=True)
                errors.add_metric([gauge.name], 1)
                continue
            names = sorted(samples[0][0]) if samples else []
            family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=names)
            for labels, value in samples:
                family.add_metric([str(labels[n]) for n in names], value)
            yield family
        yield errors


def render() -> bytes:
    """The current gauges in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)


def _bearer(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


@never_cache
@require_GET
def metrics(request):
    """The Prometheus page, for the metrics token or a signed-in staff user."""
    token = _bearer(request)
    expected = settings.METRICS_TOKEN
    if token is not None:
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            response = HttpResponse("invalid metrics token\n", status=401,
                                    content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    elif not (request.user.is_authenticated and request.user.is_staff):
        raise Http404
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)


# --- Built-in gauge: the length of each Celery queue --------------------------
def celery_queues() -> list[str]:
    """The queues web publishes to: the default and any declared in settings."""
    names = [settings.CELERY_TASK_DEFAULT_QUEUE]
    for queue in getattr(settings, "CELERY_TASK_QUEUES", None) or ():
        name = getattr(queue, "name", queue)
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def queue_lengths() -> Iterable[Sample]:
    """Messages waiting in each Celery queue, asked of the broker with a timeout.

    On Redis a queue is a list per priority step (kombu names them
    ``queue``, ``queue\\x06\\x163``...): the lengths are summed.
    """
    timeout = settings.HEALTHCHECK_TIMEOUT_SECONDS
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=timeout,
                    transport_options=options) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        channel = conn.default_channel
        samples = []
        for queue in celery_queues():
            if hasattr(channel, "_q_for_pri"):  # Redis: one list per priority
                client = channel.client
                steps = channel.priority_steps
                keys = {channel._q_for_pri(queue, pri) for pri in steps}
                count = sum(client.llen(key) for key in keys)
            else:
                count = channel._size(queue)
            samples.append(({"queue": queue}, count))
        return samples


register_gauge(
    "civitas_celery_queue_length",
    "Messages waiting in each Celery queue",
    queue_lengths,
)
