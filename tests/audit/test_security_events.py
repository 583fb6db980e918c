"""Denied requests are security events, recorded in one place and kept off the chain.

Agency B's member probes every detail-style route of both apps for agency A's
private objects: each probe answers 404 (or 403) and leaves exactly one
``authz.denied`` security event naming the object and its agency, and not one
event on the hash chain. Missing objects and visible ones record nothing; a
flood of probes is cut by the per-caller rate limit and the dropped ones are
counted.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache

from audit.models import AuditEvent, SecurityEvent
from governance.models import EvaluationRun, PolicyResult, Submission, Waiver
from governance.services import attestations
from governance.services import decisions as decision_services
from governance.services import policies as policy_services
from tests.factories import DatasetVersionFactory, ModelVersionFactory
from tests.governance.conftest import JUSTIFICATION, RATIONALE

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

API = "/api/v1"

# (method, path, object type the event names, key of the object in ``world``)
REGISTRY_ROUTES = [
    ("get", "/agencies/{agency}/", "registry.agency", "agency"),
    ("patch", "/agencies/{agency}/", "registry.agency", "agency"),
    ("get", "/agencies/{agency}/members/", "registry.agency", "agency"),
    ("post", "/agencies/{agency}/members/", "registry.agency", "agency"),
    ("get", "/agencies/{agency}/members/{username}/", "registry.agency", "agency"),
    ("patch", "/agencies/{agency}/members/{username}/", "registry.agency", "agency"),
    ("get", "/datasets/{dataset}/", "registry.dataset", "dataset"),
    ("patch", "/datasets/{dataset}/", "registry.dataset", "dataset"),
    ("get", "/dataset-versions/{dv}/", "registry.datasetversion", "dv"),
    ("get", "/dataset-versions/{dv}/download/", "registry.datasetversion", "dv"),
    ("get", "/dataset-versions/{dv}/lineage/", "registry.datasetversion", "dv"),
    ("put", "/dataset-versions/{dv}/file/", "registry.datasetversion", "dv"),
    (
        "post",
        "/dataset-versions/{dv}/file/reference/",
        "registry.datasetversion",
        "dv",
    ),
    ("get", "/models/{model}/", "registry.aimodel", "model"),
    ("patch", "/models/{model}/", "registry.aimodel", "model"),
    ("get", "/model-versions/{mv}/", "registry.modelversion", "mv"),
    ("patch", "/model-versions/{mv}/", "registry.modelversion", "mv"),
    ("get", "/model-versions/{mv}/download/", "registry.modelversion", "mv"),
    ("get", "/model-versions/{mv}/lineage/", "registry.modelversion", "mv"),
    ("put", "/model-versions/{mv}/artifact/", "registry.modelversion", "mv"),
    (
        "post",
        "/model-versions/{mv}/artifact/reference/",
        "registry.modelversion",
        "mv",
    ),
]
GOVERNANCE_ROUTES = [
    ("post", "/model-versions/{mv}/evaluations/", "registry.modelversion", "mv"),
    ("get", "/evaluations/{run}/", "governance.evaluationrun", "run"),
    ("post", "/evaluations/{run}/cancel/", "governance.evaluationrun", "run"),
    ("get", "/evaluations/{run}/items/", "governance.evaluationrun", "run"),
    ("get", "/evaluations/{run}/attestation/", "governance.evaluationrun", "run"),
    ("get", "/use-cases/{use_case}/", "governance.usecase", "use_case"),
    ("patch", "/use-cases/{use_case}/", "governance.usecase", "use_case"),
    ("post", "/use-cases/{use_case}/assessment/", "governance.usecase", "use_case"),
    ("post", "/use-cases/{use_case}/policy-check/", "governance.usecase", "use_case"),
    (
        "get",
        "/use-cases/{use_case}/policy-results/",
        "governance.usecase",
        "use_case",
    ),
    ("get", "/use-cases/{use_case}/history/", "governance.usecase", "use_case"),
    ("post", "/use-cases/{use_case}/submit/", "governance.usecase", "use_case"),
    ("post", "/use-cases/{use_case}/suspend/", "governance.usecase", "use_case"),
    ("get", "/policies/{policy}/", "governance.policy", "policy"),
    ("get", "/policies/{policy}/versions/", "governance.policy", "policy"),
    ("post", "/policies/{policy}/versions/", "governance.policy", "policy"),
    ("get", "/policy-results/{result}/", "governance.policyresult", "result"),
    ("get", "/decisions/{decision}/", "governance.decision", "decision"),
    ("get", "/decisions/{decision}/attestation/", "governance.decision", "decision"),
    ("get", "/submissions/{submission}/", "governance.submission", "submission"),
    ("get", "/waivers/{waiver}/", "governance.waiver", "waiver"),
    ("get", "/attestations/{attestation}/", "governance.attestation", "attestation"),
]


@pytest.fixture(autouse=True)
def _fresh_rate_counts():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(kit, reviewer, member_a, agency_a):
    """Agency A's private catalogue and its governance records, by route key."""
    use_case = kit.in_review(acc=0.3)
    decision = decision_services.use_case_approve(
        actor=reviewer,
        use_case=use_case,
        rationale=RATIONALE,
        waiver_rule_ids=["mc-acc"],
        waiver_justification=JUSTIFICATION,
    )
    # The approval made the governed version public; these stay private.
    mv = ModelVersionFactory(model__agency=agency_a)
    dv = DatasetVersionFactory(dataset__agency=agency_a)
    run = kit.run()
    run.model_version = mv
    run.save(update_fields=["model_version"])
    attestations.attestation_for_run(run=run)
    policy = policy_services.policy_create(
        actor=reviewer,
        name="city-a-only",
        title="City A's own policy",
        scope="agency",
        agency=agency_a,
        rules=[{"id": "pd", "kind": "personal_data", "mode": "forbidden"}],
    )
    return {
        "agency": agency_a.slug,
        "username": member_a.username,
        "dataset": dv.dataset.pk,
        "dv": dv.pk,
        "model": mv.model.pk,
        "mv": mv.pk,
        "run": run.pk,
        "use_case": use_case.pk,
        "policy": policy.pk,
        "result": PolicyResult.objects.filter(use_case=use_case).first().pk,
        "decision": decision.pk,
        "submission": Submission.objects.get(use_case=use_case).pk,
        "waiver": Waiver.objects.get(use_case=use_case).pk,
        "attestation": decision.attestation.pk,
    }


def _call(client, method: str, path: str):
    return getattr(client, method)(API + path, {}, format="json")


@pytest.mark.parametrize(
    ("method", "path", "object_type", "key"),
    REGISTRY_ROUTES + GOVERNANCE_ROUTES,
    ids=[f"{m} {p}" for m, p, _, _ in REGISTRY_ROUTES + GOVERNANCE_ROUTES],
)
def test_c1_a_cross_agency_probe_is_one_security_event_and_no_chain_event(
    world, api_b, member_b, method, path, object_type, key
):
    chain = AuditEvent.objects.count()

    response = _call(api_b, method, path.format(**world))

    assert response.status_code in (403, 404), response.content
    (event,) = SecurityEvent.objects.all()
    assert event.action == "authz.denied"
    assert (event.object_type, event.object_id) == (object_type, str(world[key]))
    assert event.agency_slug == "city-a"
    assert event.agency.slug == "city-a"
    assert event.actor_id == member_b.pk
    assert event.actor_label == f"{member_b.username}#{member_b.pk}"
    assert (event.method, event.path) == (method.upper(), API + path.format(**world))
    assert event.status_code == response.status_code
    assert AuditEvent.objects.count() == chain


def test_missing_objects_and_visible_ones_record_nothing(world, api_a, api_b):
    missing = {key: 999999 for key in world} | {"agency": "no-such", "username": "x"}
    for method, path, _, _ in REGISTRY_ROUTES + GOVERNANCE_ROUTES:
        if method == "get":
            assert _call(api_b, method, path.format(**missing)).status_code == 404
    # Agency A's own version has no artifact: its download is 404, no denial.
    assert _call(api_a, "get", f"/model-versions/{world['mv']}/download/").status_code
    assert _call(api_a, "get", f"/model-versions/{world['mv']}/").status_code == 200

    assert not SecurityEvent.objects.exists()


def test_a_forbidden_write_is_recorded(world, api_reviewer, reviewer):
    response = _call(api_reviewer, "patch", f"/use-cases/{world['use_case']}/")

    assert response.status_code == 403
    (event,) = SecurityEvent.objects.all()
    assert (event.actor_id, event.status_code) == (reviewer.pk, 403)
    assert event.object_type == "governance.usecase"


def test_a_flood_of_probes_is_rate_limited_and_the_dropped_ones_counted(
    world, api_b, settings
):
    settings.AUDIT_SECURITY_EVENTS_PER_MINUTE = 3
    chain = AuditEvent.objects.count()
    for _ in range(10):
        assert _call(api_b, "get", f"/models/{world['model']}/").status_code == 404

    assert SecurityEvent.objects.count() == 3
    settings.AUDIT_SECURITY_EVENTS_PER_MINUTE = 100
    _call(api_b, "get", f"/models/{world['model']}/")
    newest = SecurityEvent.objects.order_by("-id").first()
    assert newest.suppressed == 7
    assert SecurityEvent.objects.count() == 4
    assert AuditEvent.objects.count() == chain


def test_every_detail_route_under_the_api_is_covered_or_exempt():
    """A detail route added tomorrow must say which object its URL names."""
    from django.conf import settings as django_settings
    from django.urls import URLPattern, URLResolver, get_resolver

    # Tokens are the caller's own, licences and questionnaires shared by all,
    # system routes hold no agency's data, audit events are filtered by agency.
    exempt = {"auth", "system", "audit", "questionnaires", "licences"}

    def walk(resolver, prefix=""):
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern)

    uncovered = set()
    for route in walk(get_resolver()):
        if not route.startswith("api/v1/") or ("<" not in route and "(?P" not in route):
            continue
        segment = route.removeprefix("api/v1/").lstrip("^").split("/", 1)[0]
        if segment not in django_settings.AUDIT_DENIAL_ROUTES | dict.fromkeys(exempt):
            uncovered.add(segment)
    assert uncovered == set()


def test_the_security_event_admin_is_read_only(admin_client, world, api_b):
    _call(api_b, "get", f"/models/{world['model']}/")
    event = SecurityEvent.objects.get()

    assert admin_client.get("/admin/audit/securityevent/").status_code == 200
    change = f"/admin/audit/securityevent/{event.pk}/change/"
    assert admin_client.get(change).status_code == 200
    assert admin_client.get("/admin/audit/securityevent/add/").status_code == 403
    assert admin_client.post(change, {"path": "/forged/"}).status_code == 403


def test_runs_are_hidden_with_their_version(world, api_b):
    run = EvaluationRun.objects.get(pk=world["run"])
    assert run.model_version_id == world["mv"]
    assert _call(api_b, "get", f"/evaluations/{run.pk}/").status_code == 404
