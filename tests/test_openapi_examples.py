"""Every /api/v1/ operation in the OpenAPI schema carries an example.

An operation counts as documented when its request body or one of its 2xx
responses has an ``example`` or ``examples`` on some media type. The few
operations with nothing to illustrate are listed in ``NOTHING_TO_SHOW``, and
the test checks that they indeed have no body but a binary one.
"""

from __future__ import annotations

from drf_spectacular.generators import SchemaGenerator

METHODS = {"get", "post", "put", "patch", "delete"}

# Operations without a request body whose 2xx answer is empty or raw bytes.
NOTHING_TO_SHOW = {
    "DELETE /api/v1/agencies/{agency_slug}/members/{username}/": "204, no body",
    "DELETE /api/v1/auth/tokens/{token_key}/": "204, no body",
    "DELETE /api/v1/suites/{id}/": "204, no body",
    "DELETE /api/v1/model-versions/{id}/uploads/{upload_id}/": "204, no body",
    "GET /api/v1/model-versions/{id}/download/": "the ONNX bundle's bytes",
    "GET /api/v1/dataset-versions/{id}/download/": "the data file's bytes",
}


def _has_example(content: dict) -> bool:
    return any(
        media.get("examples") or "example" in media for media in content.values()
    )


def operations_without_examples(schema: dict) -> list[str]:
    missing = []
    for path, item in schema["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in item.items():
            if method not in METHODS:
                continue
            contents = [operation.get("requestBody", {}).get("content", {})]
            contents += [
                response.get("content", {})
                for code, response in operation["responses"].items()
                if str(code).startswith("2")
            ]
            if not any(_has_example(content) for content in contents):
                missing.append(f"{method.upper()} {path}")
    return missing


def _schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_every_operation_has_an_example():
    schema = _schema()
    assert len(schema["paths"]) > 40
    missing = set(operations_without_examples(schema)) - set(NOTHING_TO_SHOW)
    assert not missing, "operations without an example:\n" + "\n".join(sorted(missing))


def test_operations_left_without_an_example_have_nothing_to_show():
    schema = _schema()
    for name in NOTHING_TO_SHOW:
        method, path = name.split(" ")
        operation = schema["paths"][path][method.lower()]
        assert "requestBody" not in operation, name
        for code, answer in operation["responses"].items():
            if str(code).startswith("2"):
                for media in answer.get("content", {}).values():
                    assert media["schema"].get("format") == "binary", name
