"""The OpenAPI schema of the whole API validates with no warning."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, process_env


def test_openapi_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            str(target),
        ],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    schema = target.read_text(encoding="utf-8")
    for path in (
        "/api/v1/models/",
        "/api/v1/model-versions/{id}/",
        "/api/v1/auth/tokens/",
        "/api/v1/agencies/{agency_slug}/members/{username}/",
    ):
        assert f"  {path}:" in schema
