"""Example bodies of the catalogue API for the OpenAPI schema.

Names follow the demo catalogue (``demo.catalogue``): Arden City Council trains
small assistants, Lakeland Regional Authority runs one of them. A response
example of a list operation is one row; drf-spectacular wraps it in the page.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

DIGEST = "9f2c4e1a7b3d5c8e0f6a2b4d6e8f0a1c3e5b7d9f1a2c4e6b8d0f2a4c6e8b0d2f"
AT = "2026-03-02T09:30:00Z"


def response(
    name: str, value, *, status: int = 200, media_type: str = ""
) -> OpenApiExample:
    """A response-only example for one 2xx status code."""
    extra = {"media_type": media_type} if media_type else {}
    return OpenApiExample(
        name, value=value, response_only=True, status_codes=[str(status)], **extra
    )


def request(name: str, value) -> OpenApiExample:
    return OpenApiExample(name, value=value, request_only=True)


ARDEN = {"slug": "arden-city", "name": "Arden City Council"}

AGENCY = {
    **ARDEN,
    "jurisdiction": "GB",
    "contact_name": "Digital Services Unit",
    "contact_email": "ai@arden-city.example.gov",
    "description": "A city council that trains small assistants for its contact "
    "centre on its own published service explanations.",
    "is_oversight_body": False,
    "created_at": AT,
}

MEMBERSHIP = {
    "username": "arden.member",
    "email": "tomasz.nowak@arden-city.example.gov",
    "agency": "arden-city",
    "role": "member",
    "created_at": AT,
    "updated_at": AT,
}

ME = {
    "username": "arden.member",
    "email": "tomasz.nowak@arden-city.example.gov",
    "role": "member",
    "is_oversight": False,
    "is_platform_admin": False,
    "agency": ARDEN,
}

TOKEN = {
    "token_key": "3f6c0d3b1c9a4e7",
    "created": AT,
    "expiry": "2026-05-31T09:30:00Z",
    "is_current": True,
}

LICENCE_SUMMARY = {
    "expression": "Apache-2.0",
    "is_osi_approved": True,
    "allows_commercial_use": True,
    "allows_derivatives": True,
    "requires_share_alike": False,
}

LICENCE = {
    "id": 1,
    "spdx_ids": ["Apache-2.0"],
    "name": "Apache License 2.0",
    **LICENCE_SUMMARY,
    "created_at": AT,
}

DATASET = {
    "id": 3,
    "agency": ARDEN,
    "name": "Citizen requests (pseudonymised)",
    "slug": "citizen-requests",
    "description": "Residents' requests to the contact centre, names removed.",
    "visibility": "private",
    "created_by": "arden.maintainer",
    "created_at": AT,
}

DATASET_VERSION = {
    "id": 12,
    "dataset": 3,
    "dataset_slug": "citizen-requests",
    "agency": "arden-city",
    "version": "1.0.0",
    "motivation": "Suggest a first reply and a department for a request.",
    "composition": "2,400 requests with the department that answered them.",
    "collection_process": "Contact-centre web form, 2024-2025.",
    "preprocessing": "Names, addresses and telephone numbers removed.",
    "intended_uses": "Fine-tuning the requests assistant.",
    "distribution": "Within Arden City Council only.",
    "maintenance": "Digital Services Unit, reviewed yearly.",
    "languages": ["en"],
    "record_count": 2400,
    "licence": {
        "expression": "CC-BY-NC-4.0",
        "is_osi_approved": False,
        "allows_commercial_use": False,
        "allows_derivatives": True,
        "requires_share_alike": False,
    },
    "origin_jurisdiction": "GB",
    "personal_data": "pseudonymised",
    "legal_basis": "UK GDPR Art. 6(1)(e): public task.",
    "digest": DIGEST,
    "size_bytes": 812_544,
    "artifact_state": "available",
    "created_by": "arden.maintainer",
    "created_at": AT,
}

DATASET_FILE = {
    "id": 12,
    "artifact_state": "available",
    "artifact_error": "",
    "digest": DIGEST,
    "size_bytes": 812_544,
    "original_filename": "citizen-requests.jsonl",
    "source_uri": "",
}

MODEL = {
    "id": 7,
    "agency": ARDEN,
    "name": "Arden Requests Assistant",
    "slug": "arden-requests-assistant",
    "task": "text-generation",
    "domain": "contact centre",
    "description": "The tiny model fine-tuned on residents' own requests.",
    "intended_use": "Suggesting a first reply and a department for a request.",
    "out_of_scope_uses": "Answering residents without a member of staff.",
    "visibility": "private",
    "created_by": "arden.maintainer",
    "created_at": AT,
    "updated_at": AT,
}

GRAPH = {
    "graph_inputs": [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}
    ],
    "graph_outputs": [
        {"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 320]}
    ],
    "opsets": {"": 18},
    "parameter_count": 1_204_224,
    "weight_bytes": 4_816_896,
    "kind": "causal_lm_kv",
    "layout": "optimum",
    "num_layers": 2,
    "quantisation": "fp32",
}

MODEL_VERSION = {
    "id": 31,
    "model": 7,
    "model_slug": "arden-requests-assistant",
    "agency": "arden-city",
    "version": "1.0.0",
    "status": "draft",
    "licence": LICENCE_SUMMARY,
    "base_version": {
        "id": 29,
        "model": 5,
        "model_slug": "arden-tiny-lm",
        "agency": "arden-city",
        "version": "1.0.0",
    },
    "derivation": "fine-tuned",
    "derivation_settings": {},
    "datasets": [
        {
            "dataset_version": 12,
            "dataset": "citizen-requests",
            "agency": "arden-city",
            "version": "1.0.0",
            "role": "fine-tuning",
        }
    ],
    "training_run": "",
    "training_jurisdiction": "GB",
    "training_hardware": "2 CPU cores, NumPy (civitas-modelgen)",
    "training_energy_kwh": "0.120",
    "hosting_jurisdiction": "GB",
    "limitations": "English only; trained on a small corpus.",
    "risks": "May suggest the wrong department.",
    "ethical_considerations": "Replies are always reviewed by staff.",
    "artifact_state": "available",
    "artifact_error": "",
    "artifact_digest": DIGEST,
    "artifact_size": 4_902_113,
    "artifact_format": "zip",
    **GRAPH,
    "selftest": None,
    "is_released": True,
    "released_at": AT,
    "created_by": "arden.maintainer",
    "created_at": AT,
    "updated_at": AT,
}

ARTIFACT = {
    "id": 31,
    "artifact_state": "available",
    "artifact_error": "",
    "artifact_digest": DIGEST,
    "artifact_size": 4_902_113,
    "artifact_format": "zip",
    "original_filename": "arden-requests-assistant.zip",
    "source_uri": "",
    **GRAPH,
    "selftest": None,
    "released_at": AT,
}

# A version registered a moment ago: metadata only, its artifact still to come.
MODEL_VERSION_UNRELEASED = {
    **MODEL_VERSION,
    "artifact_state": "none",
    "artifact_digest": "",
    "artifact_size": None,
    "artifact_format": "",
    "graph_inputs": [],
    "graph_outputs": [],
    "opsets": {},
    "parameter_count": None,
    "weight_bytes": None,
    "kind": "generic",
    "layout": "",
    "num_layers": None,
    "quantisation": "",
    "is_released": False,
    "released_at": None,
}
