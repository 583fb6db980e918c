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
