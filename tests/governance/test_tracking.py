"""Evaluation runs are logged to a real MLflow store and read back."""

from __future__ import annotations

from governance import tracking


def test_logged_evaluation_reads_back_with_inputs_params_metrics_artifacts(
    mlflow_store,
):
    record = tracking.EvaluationRecord(
        run_name="city-a/helper@1.0.0 civitas-core",
        tags={"civitas.model_version_id": "12", "civitas.evaluation_run_id": "7"},
        params={"artifact_sha256": "ab" * 32, "suite": "civitas-core@1.0.0"},
        metrics={"perplexity": 41.5, "acc": 0.25},
        datasets=[
            tracking.DatasetRef("civitas/pmc@1.0.0", "cd" * 32, "civitas://dv/3")
        ],
        json_artifacts={"environment.json": {"cpu": "test"}},
        text_artifacts={"items/multiple_choice.jsonl": '{"id": 1}\n'},
    )

    logged = tracking.log_evaluation(record)
    summary = tracking.read_run(logged.run_id)

    assert summary.status == "FINISHED"
    assert summary.tags["civitas.model_version_id"] == "12"
    assert summary.params["artifact_sha256"] == "ab" * 32
    assert summary.metrics == {"perplexity": 41.5, "acc": 0.25}
    assert summary.dataset_digests == ["cd" * 32]
    assert summary.artifacts == ["environment.json", "items/multiple_choice.jsonl"]
    assert (mlflow_store / "mlruns").is_dir()  # artifacts under the configured root


def test_a_failed_evaluation_is_logged_as_failed(mlflow_store):
    logged = tracking.log_evaluation(
        tracking.EvaluationRecord(
            run_name="x",
            tags={},
            params={"failure": "timeout"},
            metrics={},
            failed=True,
        )
    )

    assert tracking.read_run(logged.run_id).status == "FAILED"


def test_a_record_survives_the_outbox_payload_round_trip():
    record = tracking.EvaluationRecord(
        run_name="r",
        tags={"t": "1"},
        params={"p": "2"},
        metrics={"m": 0.5},
        datasets=[tracking.DatasetRef("civitas/d@1", "ab" * 32, "civitas://dv/1")],
        stored_artifacts={"items.jsonl": "evaluations/1/items.jsonl"},
    )

    assert tracking.EvaluationRecord.from_json(record.to_json()) == record


def test_logging_twice_with_one_key_makes_one_run(mlflow_store):
    record = tracking.EvaluationRecord(
        run_name="once", tags={}, params={"p": "1"}, metrics={"m": 1.0}
    )

    first = tracking.log_evaluation(record, key="evaluation_run:once")
    second = tracking.log_evaluation(record, key="evaluation_run:once")

    assert second.run_id == first.run_id
    runs = tracking.client().search_runs(
        [first.experiment_id],
        filter_string=f"tags.`{tracking.OUTBOX_KEY_TAG}` = 'evaluation_run:once'",
    )
    assert len(runs) == 1


def test_mlflow_http_calls_get_the_settings_limits(settings, monkeypatch):
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.setenv(name, "999")  # undone after the test
    settings.MLFLOW_HTTP_REQUEST_TIMEOUT = 7
    settings.MLFLOW_HTTP_REQUEST_MAX_RETRIES = 2

    tracking.apply_http_limits()

    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2
