"""The routes whose 404 ``audit.middleware`` can tell apart from a missing object.

Read by the settings as ``AUDIT_DENIAL_ROUTES`` (a fixed table of the API's
URL segments, not configuration, so it lives here rather than among the
settings read from the environment).
"""

# What the first URL argument of a route under /api/v1/<segment>/ names, so a
# 404 can be told apart from a missing object: ``model`` and ``lookup`` find
# the object, ``agency`` lists paths to the agency owning it ("" for the object
# itself), and ``visible`` is a model with ``visible_to(user)`` and the lookup
# that finds the object (or its owner) among what the caller may read.
DENIAL_ROUTES = {
    "agencies": {
        "model": "registry.Agency",
        "lookup": "slug",
        "agency": [""],
        "visible": ("registry.Membership", "agency__slug"),
    },
    "datasets": {
        "model": "registry.Dataset",
        "lookup": "pk",
        "agency": ["agency"],
        "visible": ("registry.Dataset", "pk"),
    },
    "dataset-versions": {
        "model": "registry.DatasetVersion",
        "lookup": "pk",
        "agency": ["dataset__agency"],
        "visible": ("registry.DatasetVersion", "pk"),
    },
    "models": {
        "model": "registry.AIModel",
        "lookup": "pk",
        "agency": ["agency"],
        "visible": ("registry.AIModel", "pk"),
    },
    "model-versions": {
        "model": "registry.ModelVersion",
        "lookup": "pk",
        "agency": ["model__agency"],
        "visible": ("registry.ModelVersion", "pk"),
    },
    "suites": {
        "model": "governance.EvaluationSuite",
        "lookup": "pk",
        "agency": ["agency"],
        "visible": ("governance.EvaluationSuite", "pk"),
    },
    "evaluations": {
        "model": "governance.EvaluationRun",
        "lookup": "pk",
        "agency": ["model_version__model__agency"],
        "visible": ("governance.EvaluationRun", "pk"),
    },
    "use-cases": {
        "model": "governance.UseCase",
        "lookup": "pk",
        "agency": ["agency"],
        "visible": ("governance.UseCase", "pk"),
    },
    "policies": {
        "model": "governance.Policy",
        "lookup": "pk",
        "agency": ["agency"],
        "visible": ("governance.Policy", "pk"),
    },
    "policy-results": {
        "model": "governance.PolicyResult",
        "lookup": "pk",
        "agency": ["use_case__agency"],
        "visible": ("governance.PolicyResult", "pk"),
    },
    "decisions": {
        "model": "governance.Decision",
        "lookup": "pk",
        "agency": ["use_case__agency"],
        "visible": ("governance.Decision", "pk"),
    },
    "submissions": {
        "model": "governance.Submission",
        "lookup": "pk",
        "agency": ["use_case__agency"],
        "visible": ("governance.UseCase", "submissions__pk"),
    },
    "waivers": {
        "model": "governance.Waiver",
        "lookup": "pk",
        "agency": ["use_case__agency"],
        "visible": ("governance.UseCase", "waivers__pk"),
    },
    "attestations": {
        "model": "governance.Attestation",
        "lookup": "pk",
        "agency": ["run__model_version__model__agency", "decision__use_case__agency"],
        "visible": ("governance.Attestation", "pk"),
    },
    "evaluation-schedules": {
        "model": "governance.EvaluationSchedule",
        "lookup": "pk",
        "agency": ["model_version__model__agency"],
        "visible": ("governance.EvaluationSchedule", "pk"),
    },
    # A 404 on another agency's webhook is recorded as authz.denied.
    "webhooks": {
        "model": "notifications.Webhook",
        "lookup": "pk",
        "agency": ["agency"],
        "visible": ("notifications.Webhook", "pk"),
    },
}
