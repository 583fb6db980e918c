"""An auditor opens an object's chain, sees it verified and signed, and downloads it."""

from __future__ import annotations

import json

import pytest

from audit import services as audit
from tests.e2e.conftest import (
    PASSWORD,
    accessible_in_both_languages,
    sign_in,
)
from tests.governance.conftest import *  # noqa: F403  (the lifecycle kit and people)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


def test_an_auditor_opens_a_chain_sees_it_verified_and_downloads_it(
    page, shot, kit, reviewer, tmp_path
):
    kit.in_review()
    checkpoint = audit.checkpoint_create()
    reviewer.set_password(PASSWORD)
    reviewer.save(update_fields=["password"])
    sign_in(page, "rita")

    page.get_by_role("link", name="Audit").first.click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Audit chain"
    verification = page.locator("#verification")
    assert verification.locator(".badge--ok").inner_text() == "OK"
    assert checkpoint.head_hash in page.content()
    assert page.get_by_text("Verifies with the platform key").count() == 1
    accessible_in_both_languages(page, shot, "audit-home")

    page.get_by_label("Object type").select_option("governance.usecase")
    page.get_by_label("Object id").fill(str(kit.use_case.pk))
    page.get_by_role("button", name="Open the chain").click()
    page.wait_for_load_state()
    assert page.url.endswith(
        f"/portal/audit/objects/governance.usecase/{kit.use_case.pk}/"
    )
    assert page.get_by_role("heading", name="use_case.submitted").count() == 1
    assert page.locator(".badge--bad").count() == 0
    accessible_in_both_languages(page, shot, "audit-object")

    with page.expect_download() as caught:
        page.get_by_role("link", name="Download these events (JSON Lines)").click()
    path = tmp_path / "export.jsonl"
    caught.value.save_as(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "header" and lines[0]["partial"] is True
    assert {line["action"] for line in lines if line["type"] == "event"} >= {
        "use_case.submitted",
        "use_case.review_started",
    }
    assert lines[-1]["type"] == "end"

    page.goto("/portal/audit/")
    with page.expect_download() as caught:
        page.get_by_role("link", name="Download the whole chain (JSON Lines)").click()
    whole = tmp_path / "chain.jsonl"
    caught.value.save_as(whole)
    first = json.loads(whole.read_text().splitlines()[0])
    assert first["partial"] is False
    shot(page, "audit-after-export")
