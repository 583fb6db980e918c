"""MLflow as the lineage record: the model registry, datasets and decisions (issue 13).

Each test writes through the real services, delivers the outbox with
``outbox_deliver`` (what the Celery task runs) and reads MLflow back with
``mlflow.MlflowClient``: a fresh SQLite tracking store per test, and a real
``mlflow server`` process that is stopped and started for the catch-up.
"""

from __future__ import annotations

import json
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from mlflow import MlflowClient

from audit.models import AuditEvent
from governance import tracking
from governance.models import OutboxKind, OutboxMessage
from governance.services import decisions as decision_services
from governance.services import mlflow_sync, outbox
from registry import services as registry_services
from registry.models import DatasetRole, VersionStatus
from tests.factories import AIModelFactory, DatasetVersionFactory, LicenceFactory
from tests.governance.conftest import RATIONALE
from tests.mlflow_server import MlflowServer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def store(settings, tmp_path) -> MlflowClient:
    """A fresh SQLite tracking store for the test, and a client to read it."""
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'mlflow.sqlite3'}"
    settings.MLFLOW_ARTIFACT_ROOT = (tmp_path / "artifacts").as_uri()
    settings.MLFLOW_EXPERIMENT = f"registry-{uuid.uuid4().hex[:8]}"
    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)


def _deliver() -> dict[str, int]:
    counts = outbox.outbox_deliver(budget_s=120)
    assert counts["failed"] == 0, OutboxMessage.objects.values("kind", "last_error")
    return counts


def _name(version) -> str:
    return f"{version.model.agency.slug}.{version.model.slug}"


def _mlflow_version(mlflow_client: MlflowClient, version):
    found = mlflow_client.search_model_versions(
        f"name = '{_name(version)}' and tags.`civitas.model_version_id` = "
        f"'{version.pk}'"
    )
    assert len(found) == 1
    return found[0]


def test_registering_a_version_owes_mlflow_a_registered_version_with_its_tags(
    store, member_a, django_capture_on_commit_callbacks
):
    model = AIModelFactory(agency=member_a.membership.agency, slug="helper")
    licence = LicenceFactory(expression="Apache-2.0")
    with django_capture_on_commit_callbacks(execute=True):
        version = registry_services.model_version_create(
            actor=member_a,
            model=model,
            version="1.2.0",
            licence=licence,
            training_jurisdiction="FR",
            hosting_jurisdiction="DE",
        )
    # Owed, not sent: the registry never waits on MLflow.
    message = OutboxMessage.objects.get(dedupe_key=f"model_version:{version.pk}")
    assert message.kind == OutboxKind.MODEL_VERSION
    assert message.delivered_at is None
    assert not store.search_registered_models()

    _deliver()
    mv = _mlflow_version(store, version)
    assert mv.name == f"{model.agency.slug}.helper"
    assert mv.tags["civitas.version"] == "1.2.0"
    assert mv.tags["civitas.licence"] == "Apache-2.0"
    assert mv.tags["civitas.training_jurisdiction"] == "FR"
    assert mv.tags["civitas.hosting_jurisdiction"] == "DE"
    assert mv.tags["civitas.status"] == VersionStatus.DRAFT
    assert "civitas.artifact_sha256" not in mv.tags  # no artifact yet
    assert store.get_registered_model(mv.name).aliases == {"draft": mv.version}

    # Delivered twice (a repeated message): still one registered version.
    outbox.model_version_owed(version_id=version.pk)
    _deliver()
    assert len(store.search_model_versions(f"name = '{mv.name}'")) == 1


def test_the_status_alias_follows_a_real_status_change_and_decisions_are_tagged(
    store, kit, reviewer
):
    version = kit.use_case.model_version
    with transaction.atomic():
        outbox.model_version_owed(version_id=version.pk)
    _deliver()
    mv = _mlflow_version(store, version)
    assert mv.tags["civitas.artifact_sha256"] == "a" * 64
    assert store.get_registered_model(mv.name).aliases == {"draft": mv.version}

    kit.approved()
    assert OutboxMessage.objects.filter(
        kind=OutboxKind.DECISION, delivered_at__isnull=True
    ).exists()
    _deliver()
    mv = _mlflow_version(store, version)
    assert mv.tags["civitas.status"] == VersionStatus.APPROVED
    assert store.get_registered_model(mv.name).aliases == {"approved": mv.version}
    decision = version.decisions.get()
    tag = json.loads(mv.tags[f"civitas.decision.{decision.pk}"])
    event = AuditEvent.objects.filter(action="use_case.approved").last()
    assert tag == {
        "audit_hash": event.hash,
        "audit_seq": str(event.seq),
        "kind": "approve",
        "to": "approved",
    }

    decision_services.use_case_suspend(
        actor=reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    _deliver()
    mv = _mlflow_version(store, version)
    assert mv.tags["civitas.status"] == VersionStatus.SUSPENDED
    assert store.get_registered_model(mv.name).aliases == {"suspended": mv.version}
    assert len([k for k in mv.tags if k.startswith("civitas.decision.")]) == 2
    assert mlflow_sync.registry_drift() == []


def test_dataset_versions_are_mlflow_datasets_on_their_runs_and_the_training_run(
    store, member_a, django_capture_on_commit_callbacks
):
    agency = member_a.membership.agency
    dataset_version = DatasetVersionFactory(
        dataset__agency=agency, digest="b" * 64, version="2.0.0"
    )
    with transaction.atomic():
        outbox.dataset_version_owed(version_id=dataset_version.pk)
    # The agency's own training run, in its own experiment.
    training = store.create_run(store.create_experiment("agency-training"))
    store.set_terminated(training.info.run_id)
    model = AIModelFactory(agency=agency)
    with django_capture_on_commit_callbacks(execute=True):
        version = registry_services.model_version_create(
            actor=member_a,
            model=model,
            version="1.0.0",
            licence=LicenceFactory(),
            datasets=[(dataset_version, DatasetRole.TRAINING)],
            training_run=f"runs:/{training.info.run_id}/model",
        )
    # An evaluation that read the dataset.
    evaluation = tracking.log_evaluation(
        tracking.EvaluationRecord(
            run_name="eval",
            tags={},
            params={},
            metrics={"m.acc": 0.5},
            datasets=[outbox.dataset_ref(dataset_version)],
        )
    )
    _deliver()

    def inputs(run_id: str) -> list:
        return store.get_run(run_id).inputs.dataset_inputs

    registration = store.search_runs(
        [store.get_experiment_by_name(tracking.datasets_experiment()).experiment_id],
        filter_string=f"tags.`civitas.dataset_version_id` = '{dataset_version.pk}'",
    )
    assert len(registration) == 1
    for run_id, context in [
        (registration[0].info.run_id, "registration"),
        (evaluation.run_id, "evaluation"),
        (training.info.run_id, "training"),
    ]:
        (item,) = inputs(run_id)
        assert item.dataset.name == str(dataset_version)
        assert item.dataset.digest == ("b" * 64)[:36]
        assert json.loads(item.dataset.source) == {
            "uri": f"civitas://dataset-versions/{dataset_version.pk}",
            "sha256": "b" * 64,
        }
        columns = [c["name"] for c in json.loads(item.dataset.schema)["mlflow_colspec"]]
        assert "record_count" in columns
        assert {t.key: t.value for t in item.tags}["mlflow.data.context"] == context
    # The training run is the registered version's source run.
    mv = _mlflow_version(store, version)
    assert mv.run_id == training.info.run_id


def test_evaluation_runs_are_linked_on_the_registered_version(
    store, governed_version, small_suite, make_run
):
    run = make_run(governed_version, small_suite, metrics={"t.acc": 0.7})
    with transaction.atomic():
        outbox.outbox_enqueue(
            kind=OutboxKind.EVALUATION_RUN,
            dedupe_key=outbox.evaluation_outbox_key(run.pk),
            payload={
                "evaluation_run_id": run.pk,
                "record": tracking.EvaluationRecord(
                    run_name="r", tags={}, params={}, metrics={"t.acc": 0.7}
                ).to_json(),
            },
        )
    _deliver()  # the evaluation, then the version its settle owed again
    run.refresh_from_db()
    assert run.mlflow_run_id
    mv = _mlflow_version(store, governed_version)
    assert mv.tags["civitas.evaluation_runs"] == run.mlflow_run_id


def test_drift_is_reported_both_ways_and_repaired(store, governed_version):
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("mlflow_sync", "--check", stdout=out)
    assert f"missing model_version={governed_version.pk}" in out.getvalue()

    with transaction.atomic():
        outbox.model_version_owed(version_id=governed_version.pk)
    assert [d.line() for d in mlflow_sync.registry_drift()] == [
        f"pending model_version={governed_version.pk} mlflow_version=-"
    ]
    _deliver()
    assert mlflow_sync.registry_drift() == []

    mv = _mlflow_version(store, governed_version)
    store.set_model_version_tag(mv.name, mv.version, "civitas.licence", "GPL-3.0")
    store.set_registered_model_alias(mv.name, "approved", mv.version)
    stray = store.create_model_version(
        mv.name, source="s3://x", tags={"civitas.model_version_id": "999999"}
    )
    kinds = {(d.kind, d.detail.split(" ")[0]) for d in mlflow_sync.registry_drift()}
    assert ("tags", "keys=civitas.licence") in kinds
    assert ("alias", "alias=approved") in kinds
    assert ("orphan", "") in kinds

    call_command("mlflow_sync", stdout=StringIO())
    _deliver()
    mv = _mlflow_version(store, governed_version)
    assert mv.tags["civitas.licence"] == governed_version.licence.expression
    assert "approved" not in store.get_registered_model(mv.name).aliases
    remaining = mlflow_sync.registry_drift()
    assert [(d.kind, d.mlflow_run_id) for d in remaining if d.kind != "alias"] == [
        ("orphan", f"{mv.name}/{stray.version}")
    ]


@pytest.mark.slow
def test_the_outbox_catches_up_after_a_real_server_is_stopped_and_started(
    settings, tmp_path, kit, monkeypatch
):
    server = MlflowServer(tmp_path / "server")
    server.start()
    try:
        settings.MLFLOW_TRACKING_URI = server.url
        settings.MLFLOW_EXPERIMENT = "catch-up"
        for name, value in {
            "MLFLOW_HTTP_REQUEST_TIMEOUT": 5,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 0,
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 0,
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": 0.0,
        }.items():
            setattr(settings, name, value)
            monkeypatch.setenv(name, str(value))
        version = kit.use_case.model_version
        with transaction.atomic():
            outbox.model_version_owed(version_id=version.pk)
        _deliver()

        server.stop()
        kit.approved()  # the registry does not wait on MLflow
        counts = outbox.outbox_deliver(budget_s=30)
        assert counts == {"delivered": 0, "failed": 1}
        owed = OutboxMessage.objects.filter(delivered_at__isnull=True)
        assert set(owed.values_list("kind", flat=True)) == {
            OutboxKind.MODEL_VERSION,
            OutboxKind.DECISION,
        }
        assert owed.filter(attempts=1).exists()

        server.start()
        owed.update(next_attempt_at=owed.first().created_at)
        _deliver()
        assert not OutboxMessage.objects.filter(delivered_at__isnull=True).exists()
        mlflow_client = MlflowClient(tracking_uri=server.url)
        mv = _mlflow_version(mlflow_client, version)
        assert mv.tags["civitas.status"] == VersionStatus.APPROVED
        assert mlflow_client.get_registered_model(mv.name).aliases == {
            "approved": mv.version
        }
        assert any(k.startswith("civitas.decision.") for k in mv.tags)
    finally:
        server.stop()


def test_a_runs_lineage_is_an_openlineage_event_hidden_from_other_agencies(
    governed_version, small_suite, make_run, member_a, member_b
):
    from tests.registry.conftest import token_client

    run = make_run(governed_version, small_suite, metrics={"mc.acc": 0.75})
    run.mlflow_run_id = "0" * 32
    run.save(update_fields=["mlflow_run_id"])
    url = f"/api/v1/evaluations/{run.pk}/openlineage/"

    answer = token_client(member_a).get(url)
    assert answer.status_code == 200
    event = answer.json()
    assert event["eventType"] == "COMPLETE"
    assert event["run"]["facets"]["externalQuery"]["externalQueryId"] == "0" * 32
    assert event["run"]["facets"]["civitas_metrics"]["metrics"] == {"mc.acc": 0.75}
    model, *datasets = event["inputs"]
    assert model["facets"]["version"]["datasetVersion"] == "a" * 64
    expected = {dv.digest for dv in _suite_dataset_versions(small_suite)}
    assert {d["facets"]["version"]["datasetVersion"] for d in datasets} == expected
    assert all(d["facets"]["schema"]["fields"] for d in datasets)
    # Every field OpenLineage requires of a run event, and a stable run id.
    assert set(event) >= {
        "eventType",
        "eventTime",
        "run",
        "job",
        "inputs",
        "outputs",
        "producer",
        "schemaURL",
    }
    assert (
        token_client(member_a).get(url).json()["run"]["runId"]
        == (event["run"]["runId"])
    )

    assert token_client(member_b).get(url).status_code == 404


def _suite_dataset_versions(suite):
    from registry.models import DatasetVersion

    ids = [entry["dataset_version"] for entry in suite.tasks]
    return DatasetVersion.objects.filter(pk__in=ids)
