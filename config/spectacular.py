"""drf-spectacular's settings: what the OpenAPI document is called and how its
enums are named.

Read by the settings as ``SPECTACULAR_SETTINGS``; a fixed table, not
configuration read from the environment, so it lives here.
"""

SETTINGS = {
    "TITLE": "Civitas API",
    "DESCRIPTION": (
        "Registry and governance of public-sector small language models: "
        "agencies, licences, datasets, models, versions, evaluations, "
        "policies, decisions and the audit chain."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets are served from the sidecar package, not a CDN: the
    # portal must work on a network with no route to the internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Choice sets sharing a field name need their own schema component names.
    "ENUM_NAME_OVERRIDES": {
        "MembershipRoleEnum": "registry.models.Role",
        "DatasetRoleEnum": "registry.models.DatasetRole",
        "ModelKindEnum": "registry.models.ModelKind",
        "VersionStatusEnum": "registry.models.VersionStatus",
        "ArtifactStateEnum": "registry.models.ArtifactState",
        # A suite's visibility and task are enums of their own beside the
        # registry's visibility and model task; named so the names stay stable.
        "VisibilityEnum": "registry.models.Visibility",
        "SuiteVisibilityEnum": "governance.models.evaluations.SuiteVisibility",
        "SuiteTaskEnum": "engine.evaluate.TASKS",
        "TaskEnum": "registry.models.Task",
    },
}
