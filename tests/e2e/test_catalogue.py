"""The catalogue in a browser: register a model and a version, upload its bundle
with a progress bar, attach a dataset, open the version page and its lineage."""

from __future__ import annotations

import pytest
from django.utils import timezone

from registry.models import ArtifactState, ModelVersion, Role
from tests.e2e.conftest import (
    PASSWORD,
    accessible_in_both_languages,
    assert_accessible,
    sign_in,
)
from tests.factories import (
    AgencyFactory,
    DatasetVersionFactory,
    MembershipFactory,
    ModelVersionFactory,
    UserFactory,
)
from tests.registry.artifact_bundles import big_external_bundle

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BUNDLE_BYTES = 6 * 1024 * 1024
# Loopback is too fast to see a progress bar move: the browser sends at 2 MB/s.
UPLOAD_THROUGHPUT = 2 * 1024 * 1024


@pytest.fixture
def catalogue():
    """A maintainer of City A, a dataset version and a released base version."""
    agency = AgencyFactory(name="City A", slug="city-a")
    user = UserFactory(username="mara", password=PASSWORD)
    MembershipFactory(user=user, agency=agency, role=Role.MAINTAINER)
    dataset_version = DatasetVersionFactory(
        dataset__agency=agency,
        dataset__name="Service questions",
        dataset__slug="service-questions",
        version="1.0.0",
        licence__expression="CC-BY-4.0",
    )
    base = ModelVersionFactory(
        model__agency=agency,
        model__name="Base assistant",
        model__slug="base-assistant",
        version="1.0.0",
        licence=dataset_version.licence,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_digest="b" * 64,
        released_at=timezone.now(),
    )
    return {"user": user, "dataset_version": dataset_version, "base": base}


def register_model_and_version(page, shot, base) -> ModelVersion:
    page.goto("/portal/models/")
    assert page.get_by_role("heading", level=1).inner_text() == "Models"
    accessible_in_both_languages(page, shot, "models")
    page.get_by_role("link", name="Register a model").click()
    page.fill("#id_name", "Reply assistant")
    page.fill("#id_slug", "reply-assistant")
    page.select_option("#id_task", "text-generation")
    page.fill("#id_intended_use", "Drafting replies to residents, read by staff.")
    shot(page, "register-model")
    page.get_by_role("button", name="Register the model").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Reply assistant"
    shot(page, "model-page")
    page.get_by_role("link", name="Register a version").click()
    page.fill("#id_version", "not-semver")
    page.fill("#id_licence", "apache-2.0")
    page.select_option("#id_base_version", str(base.pk))
    page.select_option("#id_derivation", "fine-tuned")
    page.get_by_role("button", name="Register the version").click()
    page.wait_for_load_state()
    assert "There is a problem" in page.locator(".error-summary").inner_text()
    shot(page, "version-form-error")
    page.fill("#id_version", "1.1.0")
    page.fill("#id_limitations", "French and English only.")
    page.get_by_role("button", name="Register the version").click()
    page.wait_for_load_state()
    version = ModelVersion.objects.get(model__slug="reply-assistant")
    assert page.url.endswith(f"/portal/versions/{version.pk}/")
    shot(page, "version-page-new")
    return version


def attach_dataset(page, shot, dataset_version) -> None:
    page.get_by_role("link", name="Attach a dataset").click()
    page.select_option("#id_dataset_version", str(dataset_version.pk))
    page.select_option("#id_role", "fine-tuning")
    shot(page, "attach-dataset")
    page.get_by_role("button", name="Attach").click()
    page.wait_for_load_state()
    datasets = page.locator("#datasets").locator("xpath=..")
    assert "Service questions 1.0.0" in datasets.inner_text()


def upload_bundle(page, shot, path) -> list[str]:
    """Upload with a throttled connection; the texts the live region showed."""
    page.get_by_role("link", name="Upload the bundle").click()
    page.wait_for_load_state()
    assert_accessible(page)
    page.set_input_files("#id_file", str(path))
    page.evaluate(
        """() => {
          window.seenTexts = [];
          window.seenValues = [];
          const text = document.getElementById('upload-text');
          const bar = document.getElementById('upload-bar');
          new MutationObserver(() => {
            window.seenTexts.push(text.textContent);
            window.seenValues.push([bar.value, bar.max]);
          }).observe(text, {childList: true, characterData: true, subtree: true});
        }"""
    )
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": UPLOAD_THROUGHPUT,
        },
    )
    page.get_by_role("button", name="Upload").click()
    # Polled from here: wait_for_function evaluates a string, which the CSP forbids.
    for _ in range(100):
        if page.evaluate("() => document.getElementById('upload-bar').value") > 0:
            break
        page.wait_for_timeout(50)
    shot(page, "upload-in-progress")
    page.locator("#upload-digest").wait_for(timeout=60_000)
    shot(page, "upload-done")
    values = page.evaluate("window.seenValues")
    assert any(0 < value < top for value, top in values), values
    return page.evaluate("window.seenTexts")


def test_register_upload_attach_and_follow_the_lineage(
    page, phone, shot, catalogue, tmp_path
):
    sign_in(page, "mara")
    version = register_model_and_version(page, shot, catalogue["base"])
    attach_dataset(page, shot, catalogue["dataset_version"])
    bundle = big_external_bundle(tmp_path / "reply-assistant.zip", BUNDLE_BYTES)
    texts = upload_bundle(page, shot, bundle)
    assert any(t.startswith("Sent ") and " of " in t for t in texts), texts
    version.refresh_from_db()
    assert version.artifact_state == ArtifactState.PENDING
    assert page.locator("#upload-digest").inner_text() == version.artifact_digest
    # The portal sent it through the resumable protocol, in parts.
    assert version.upload_sessions.get().state == "completed"

    page.goto(f"/portal/versions/{version.pk}/")
    assert "Reply assistant, version 1.1.0" in page.locator("h1").inner_text()
    lineage = page.locator("svg.lineage")
    assert lineage.is_visible()
    edges = page.locator(".lineage-edges").inner_text()
    assert "is the base of" in edges and "was fine-tuned on" in edges
    accessible_in_both_languages(page, shot, "version-page")

    dataset_version = catalogue["dataset_version"]
    dataset_node = lineage.locator(
        f'a[href="/portal/dataset-versions/{dataset_version.pk}/"]'
    )
    dataset_node.click()
    page.wait_for_url(f"**/portal/dataset-versions/{dataset_version.pk}/")
    assert "Service questions, version 1.0.0" in page.locator("h1").inner_text()
    assert "Reply assistant 1.1.0" in page.locator("main").inner_text()
    accessible_in_both_languages(page, shot, "datasheet")

    page.goto(f"/portal/versions/{version.pk}/")
    base = catalogue["base"]
    page.locator(f'svg.lineage a[href="/portal/versions/{base.pk}/"]').click()
    page.wait_for_url(f"**/portal/versions/{base.pk}/")
    assert "Base assistant, version 1.0.0" in page.locator("h1").inner_text()
    shot(page, "base-version-from-lineage")

    page.goto("/portal/datasets/")
    accessible_in_both_languages(page, shot, "datasets")

    sign_in(phone, "mara")
    phone.goto(f"/portal/versions/{version.pk}/")
    overflow = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    shot(phone, "version-page-phone")
