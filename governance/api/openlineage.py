"""An evaluation run's lineage as an OpenLineage run event, for other catalogues.

Built with openlineage-python's classes (``event_v2``, ``facet_v2``) and
serialised by its ``Serde``, so the shape is OpenLineage's own: the job is
the suite, the inputs are the model version (its artifact digest as the
dataset version) and the dataset versions the suite read (digest, datasheet
schema), the output is the run's results; the metrics are a custom run facet
(``civitas_metrics``) and the MLflow run is the run's external query. The
run id is a UUID derived from the Civitas run id, so the same run always
gives the same event.
"""

from __future__ import annotations

import uuid

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.models import EvaluationRun, RunStatus
from registry.models import DatasetVersion

NAMESPACE = "civitas"
PRODUCER = "https://civitas.invalid/openlineage"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_EVENT_TYPES = {
    RunStatus.SUCCEEDED: "COMPLETE",
    RunStatus.FAILED: "FAIL",
    RunStatus.CANCELLED: "ABORT",
    RunStatus.RUNNING: "RUNNING",
}


def _run_uuid(run: EvaluationRun) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"civitas:evaluation-run:{run.pk}"))


def _dataset_input(dataset_version: DatasetVersion):
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset, schema_dataset

    field = schema_dataset.SchemaDatasetFacetFields
    return InputDataset(
        namespace=NAMESPACE,
        name=f"datasets/{dataset_version}",
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=dataset_version.digest
            ),
            "schema": schema_dataset.SchemaDatasetFacet(
                fields=[
                    field(name="licence", type="string"),
                    field(name="origin_jurisdiction", type="string"),
                    field(name="personal_data", type="string"),
                    field(name="languages", type="string"),
                    field(name="record_count", type="long"),
                ]
            ),
        },
    )


def _metrics_facet(metrics: dict[str, float]):
    """A custom run facet (``civitas_metrics``) holding the run's metrics."""
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class CivitasMetricsRunFacet(RunFacet):
        metrics: dict[str, float] = attr.field(factory=dict)

    return CivitasMetricsRunFacet(metrics=metrics)


def openlineage_event(run: EvaluationRun) -> dict:
    """The OpenLineage run event of an evaluation run, as a JSON-ready dict."""
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        external_query_run,
    )
    from openlineage.client.serde import Serde

    version = run.model_version
    dataset_ids = [entry["dataset_version"] for entry in run.suite.tasks]
    datasets = DatasetVersion.objects.select_related("dataset__agency").filter(
        pk__in=dataset_ids
    )
    run_facets = {}
    if run.mlflow_run_id:
        run_facets["externalQuery"] = external_query_run.ExternalQueryRunFacet(
            externalQueryId=run.mlflow_run_id, source="mlflow"
        )
    run_facets["civitas_metrics"] = _metrics_facet(
        {f"{m.task}.{m.name}": m.value for m in run.metrics.all()}
    )
    event = RunEvent(
        eventType=RunState[_EVENT_TYPES.get(run.status, "OTHER")],
        eventTime=(run.finished_at or run.started_at or run.created_at).isoformat(),
        run=Run(runId=_run_uuid(run), facets=run_facets),
        job=Job(namespace=NAMESPACE, name=f"evaluations/{run.suite}"),
        producer=PRODUCER,
        inputs=[
            InputDataset(
                namespace=NAMESPACE,
                name=f"models/{version.model}@{version.version}",
                facets={
                    "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                        datasetVersion=run.artifact_digest
                    )
                },
            ),
            *(_dataset_input(dv) for dv in sorted(datasets, key=lambda d: d.pk)),
        ],
        outputs=[OutputDataset(namespace=NAMESPACE, name=f"evaluation-runs/{run.pk}")],
    )
    payload = Serde.to_dict(event)
    return payload


EXAMPLE = {
    "eventType": "COMPLETE",
    "eventTime": "2026-11-28T12:00:00+00:00",
    "producer": PRODUCER,
    "schemaURL": SCHEMA_URL,
    "run": {
        "runId": "3f1c5b8e-2a7d-5d39-9a51-6b2f0e6f4c11",
        "facets": {
            "externalQuery": {
                "externalQueryId": "9d3c0e8a7b6f4e21a0c1d2e3f4a5b6c7",
                "source": "mlflow",
            },
            "civitas_metrics": {"metrics": {"multiple_choice.acc": 0.9}},
        },
    },
    "job": {"namespace": NAMESPACE, "name": "evaluations/small@1.0.0", "facets": {}},
    "inputs": [
        {
            "namespace": NAMESPACE,
            "name": "models/city-a/helper@1.0.0",
            "facets": {"version": {"datasetVersion": "a" * 64}},
        }
    ],
    "outputs": [
        {
            "namespace": NAMESPACE,
            "name": "evaluation-runs/42",
            "facets": {},
        }
    ],
}


class EvaluationOpenLineageView(APIView):
    """An evaluation run's lineage as an OpenLineage run event."""

    @extend_schema(
        summary="An evaluation run's lineage in OpenLineage's JSON shape",
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="An OpenLineage RunEvent",
                examples=[
                    OpenApiExample("A succeeded run", value=EXAMPLE, response_only=True)
                ],
            ),
            404: OpenApiResponse(description="No such run visible to the caller"),
        },
    )
    def get(self, request, pk: int):
        run = get_object_or_404(
            EvaluationRun.objects.visible_to(request.user).select_related(
                "model_version__model__agency", "suite"
            ),
            pk=pk,
        )
        return Response(openlineage_event(run))
