from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    """Evidence and decisions: evaluations, policies, reviews, the audit chain."""

    name = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        """Plug evaluations and decisions into registry's lineage graphs."""
        from governance.lineage import decision_nodes, evaluation_nodes
        from registry.lineage import register_downstream_provider

        register_downstream_provider(evaluation_nodes)
        register_downstream_provider(decision_nodes)
