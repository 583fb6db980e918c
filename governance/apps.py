from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    """Evidence and decisions: evaluations, policies, reviews, the audit chain."""

    name = "governance"
    verbose_name = "Governance"
