"""Signed evidence: run and decision attestations, checked by the standalone verifier.

The verifier runs as an auditor would: ``audit/verify.py`` copied alone
into an empty directory and run with ``python -m audit.verify`` in a
subprocess that ignores ``PYTHONPATH``, so it can import nothing of the
platform.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import audit.formats
import audit.verify
from audit import signing
from audit.models import AuditEvent
from audit.verify import key_id, pae, public_key_pem_of
from config.exceptions import Conflict
from governance.models import (
    Attestation,
    EvaluationRun,
    RunStatus,
)
from governance.services import attestations
from governance.services import decisions as decision_services
from governance.services import evaluations as evaluation_services
from tests.governance.conftest import JUSTIFICATION, RATIONALE
from tests.registry.conftest import token_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def _auditor_dir(tmp_path: Path) -> Path:
    """An empty directory holding only a copy of the verifier."""
    root = tmp_path / "auditor"
    (root / "audit").mkdir(parents=True)
    shutil.copy(audit.verify.__file__, root / "audit" / "verify.py")
    shutil.copy(audit.formats.__file__, root / "audit" / "formats.py")
    (root / "audit" / "__init__.py").write_text("")
    return root


def _verify(tmp_path: Path, envelope, key_pem: str, *extra: str):
    """Run the copied verifier on ``envelope`` with ``key_pem``; the process."""
    root = _auditor_dir(tmp_path)
    (root / "attestation.json").write_text(json.dumps(envelope))
    (root / "public.pem").write_text(key_pem)
    command = [sys.executable, "-E", "-s", "-m", "audit.verify"]
    return subprocess.run(
        [*command, "attestation.json", "--key", "public.pem", *extra],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
        timeout=60,
    )


def _public_pem(client) -> str:
    response = client.get("/api/v1/audit/public-key/")
    assert response.status_code == 200
    return response.content.decode("ascii")


def _payload(envelope) -> dict:
    return json.loads(base64.b64decode(envelope["payload"]))


def test_the_copied_verifier_imports_nothing_of_the_platform(tmp_path):
    root = _auditor_dir(tmp_path)
    where = subprocess.run(
        [sys.executable, "-E", "-s", "-c", "import audit.verify as v;"
         "import sys; print(v.__file__); print('django' in sys.modules)"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
        timeout=60,
    )  # fmt: skip
    path, django_loaded = where.stdout.split()
    assert Path(path).resolve() == (root / "audit" / "verify.py").resolve()
    assert django_loaded == "False"


# --- evaluation runs ------------------------------------------------------------------


def test_a_succeeded_run_is_attested_with_everything_it_measured(kit):
    run = kit.run(acc=0.87)

    attestation = attestations.attestation_for_run(run=run)

    statement = attestation.statement
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"] == {"sha256": "a" * 64}
    predicate = statement["predicate"]
    assert predicate["evaluation_run"]["id"] == run.pk
    assert predicate["suite"]["name"] == "small"
    assert predicate["suite"]["version"] == "1.0.0"
    digests = [task["sha256"] for task in predicate["suite"]["tasks"]]
    assert len(digests) == 2 and all(len(d) == 64 for d in digests)
    assert predicate["engine"] == {"version": "1.0.0", "onnxruntime": "1.20.0"}
    assert predicate["settings"] == {"intra_op_num_threads": 2}
    assert predicate["metrics"] == [
        {"task": "multiple_choice", "name": "acc", "value": 0.87}
    ]
    assert predicate["evaluation_run"]["requested_by"]["username"] == "alice"

    envelope = attestation.envelope
    assert envelope["payloadType"] == attestations.RUN_PAYLOAD_TYPE
    payload = signing.verify_envelope(
        envelope, signing.public_key(), payload_type=attestations.RUN_PAYLOAD_TYPE
    )
    assert json.loads(payload) == statement
    assert attestation.key_id == signing.platform_key_id()
    assert attestations.attestation_is_authentic(attestation)

    event = AuditEvent.objects.get(action="evaluation.attested")
    assert event.payload_data["statement_sha256"] == attestation.statement_sha256
    # Idempotent: a second call returns the same attestation, signs nothing new.
    assert attestations.attestation_for_run(run=run) == attestation
    assert AuditEvent.objects.filter(action="evaluation.attested").count() == 1


@pytest.mark.parametrize(
    "status", [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLED]
)
def test_only_a_succeeded_or_failed_run_is_attested(kit, status):
    run = kit.run()
    EvaluationRun.objects.filter(pk=run.pk).update(status=status)  # set-up
    with pytest.raises(Conflict) as caught:
        attestations.attestation_for_run(run=run)
    assert caught.value.code == "run_not_finished"
    assert not Attestation.objects.exists()


def _failed_run(kit):
    """A running run failed by the service, as a worker's failure would."""
    run = kit.run()
    EvaluationRun.objects.filter(pk=run.pk).update(  # set-up
        status=RunStatus.RUNNING, finished_at=None
    )
    assert evaluation_services._fail(
        run.pk, code="engine_error", message="ONNX graph invalid"
    )
    return run


def test_a_failed_run_is_attested_with_its_failure_and_no_metrics(kit):
    run = _failed_run(kit)

    attestation = Attestation.objects.get(run=run)
    predicate = attestation.statement["predicate"]
    assert predicate["evaluation_run"]["status"] == "failed"
    assert predicate["evaluation_run"]["failure_code"] == "engine_error"
    assert predicate["evaluation_run"]["failure_reason"] == "ONNX graph invalid"
    assert predicate["metrics"] == [] and predicate["results"] == []
    assert attestations.attestation_is_authentic(attestation)
    event = AuditEvent.objects.get(action="evaluation.attested")
    assert event.payload_data["status"] == "failed"
    # Idempotent, and failing again changes nothing.
    assert attestations.attestation_for_run(run=run) == attestation
    assert not evaluation_services._fail(run.pk, code="engine_error", message="again")
    assert Attestation.objects.filter(run=run).count() == 1


def test_a_downloaded_failed_run_attestation_verifies_with_the_standalone_verifier(
    kit, api_a, tmp_path
):
    run = _failed_run(kit)

    response = api_a.get(f"/api/v1/evaluations/{run.pk}/attestation/")
    assert response.status_code == 200
    envelope = response.json()

    checked = _verify(
        tmp_path,
        envelope,
        _public_pem(api_a),
        "--payload-type",
        attestations.RUN_PAYLOAD_TYPE,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("OK: signature by key")
    assert '"failure_code": "engine_error"' in checked.stdout
    assert _payload(envelope)["predicate"]["metrics"] == []


def test_a_downloaded_run_attestation_verifies_with_the_standalone_verifier(
    kit, api_a, tmp_path
):
    run = kit.run()
    attestations.attestation_for_run(run=run)

    response = api_a.get(f"/api/v1/evaluations/{run.pk}/attestation/")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    envelope = response.json()

    checked = _verify(
        tmp_path,
        envelope,
        _public_pem(api_a),
        "--payload-type",
        attestations.RUN_PAYLOAD_TYPE,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("OK: signature by key")
    assert '"artifact_sha256": "' + "a" * 64 in checked.stdout


def test_an_altered_attestation_is_refused(kit, api_a, tmp_path):
    run = kit.run(acc=0.42)
    envelope = attestations.attestation_for_run(run=run).envelope
    statement = _payload(envelope)
    statement["predicate"]["metrics"][0]["value"] = 0.99  # a better score
    forged = {
        **envelope,
        "payload": base64.b64encode(
            json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
        ).decode(),
    }

    checked = _verify(tmp_path, forged, _public_pem(api_a))
    assert checked.returncode == 1
    assert checked.stdout.startswith("FAILED")


def test_an_attestation_signed_with_another_key_is_refused(kit, api_a, tmp_path):
    run = kit.run()
    envelope = attestations.attestation_for_run(run=run).envelope
    payload = base64.b64decode(envelope["payload"])
    impostor = Ed25519PrivateKey.generate()
    forged = {
        "payload": envelope["payload"],
        "payloadType": envelope["payloadType"],
        "signatures": [
            {
                "keyid": key_id(impostor.public_key()),
                "sig": base64.b64encode(
                    impostor.sign(pae(envelope["payloadType"], payload))
                ).decode(),
            }
        ],
    }

    refused = _verify(tmp_path / "platform", forged, _public_pem(api_a))
    assert refused.returncode == 1
    assert "no signature verifies" in refused.stdout
    # The forgery is well formed: only the key gives it away.
    own = _verify(tmp_path / "own", forged, public_key_pem_of(impostor.public_key()))
    assert own.returncode == 0


def test_a_decision_signature_is_not_accepted_as_an_evaluation_attestation(
    kit, reviewer, api_reviewer, tmp_path
):
    kit.approved()
    decision = kit.use_case.decisions.get()
    checked = _verify(
        tmp_path,
        decision.attestation.envelope,
        _public_pem(api_reviewer),
        "--payload-type",
        attestations.RUN_PAYLOAD_TYPE,
    )
    assert checked.returncode == 1


# --- decisions ---------------------------------------------------------------------


def test_a_decision_is_signed_naming_the_reviewer_and_its_evidence(
    kit, reviewer, api_reviewer, tmp_path
):
    use_case = kit.in_review(acc=0.3)
    [run] = EvaluationRun.objects.all()
    run_attestation = attestations.attestation_for_run(run=run)
    decision = decision_services.use_case_approve(
        actor=reviewer,
        use_case=use_case,
        rationale=RATIONALE,
        waiver_rule_ids=["mc-acc"],
        waiver_justification=JUSTIFICATION,
    )

    response = api_reviewer.get(f"/api/v1/decisions/{decision.pk}/attestation/")
    assert response.status_code == 200
    envelope = response.json()
    assert envelope["payloadType"] == attestations.DECISION_PAYLOAD_TYPE
    checked = _verify(tmp_path, envelope, _public_pem(api_reviewer))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    predicate = _payload(envelope)["predicate"]
    assert predicate["reviewer"]["username"] == "rita"
    assert predicate["reviewer"]["label"] == f"rita#{reviewer.pk}"
    assert predicate["reviewer"]["agency"] == "oversight"
    assert predicate["decision"]["kind"] == "approve"
    assert predicate["decision"]["rationale"] == RATIONALE
    assert predicate["decision"]["expires_at"]
    assert predicate["waiver"]["rule_ids"] == ["baseline/mc-acc"]
    assert predicate["waiver"]["justification"] == JUSTIFICATION
    assert predicate["policy_result"]["failed_rules"] == ["baseline/mc-acc"]
    assert predicate["submission"]["snapshot_sha256"] == (
        decision.submission.snapshot_sha256
    )
    assert predicate["evaluation_evidence"] == [
        {
            "run_id": run.pk,
            "attestation_statement_sha256": run_attestation.statement_sha256,
        }
    ]
    event = AuditEvent.objects.get(action="use_case.approved")
    assert event.payload_data["statement_sha256"] == (
        decision.attestation.statement_sha256
    )


# --- the real path: a worker finishing a run attests it ---------------------------


@pytest.mark.slow
def test_a_real_evaluation_is_attested_when_it_succeeds(
    released_lm_version, small_suite, member_a, mlflow_store, tmp_path
):
    run = evaluation_services.evaluation_request(
        actor=member_a,
        model_version=released_lm_version,
        suite=small_suite,
        enqueue=False,
    )
    finished = evaluation_services.evaluation_execute(run_id=run.pk)
    assert finished.status == RunStatus.SUCCEEDED, finished.failure_reason

    attestation = Attestation.objects.get(run=finished)
    predicate = attestation.statement["predicate"]
    assert attestation.statement["subject"][0]["digest"]["sha256"] == (
        released_lm_version.artifact_digest
    )
    assert predicate["engine"]["onnxruntime"]
    assert predicate["environment"]["cpu_count"]
    assert {m["name"] for m in predicate["metrics"]} >= {"perplexity", "acc"}
    checked = _verify(tmp_path, attestation.envelope, signing.public_key_pem())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The attestation event follows the success event in the same transaction.
    actions = list(
        AuditEvent.objects.filter(action__startswith="evaluation.")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions[-2:] == ["evaluation.succeeded", "evaluation.attested"]


def test_a_run_without_attestation_answers_409(kit, api_a):
    run = kit.run()
    response = token_client(kit.requester).get(
        f"/api/v1/evaluations/{run.pk}/attestation/"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "no_attestation"
