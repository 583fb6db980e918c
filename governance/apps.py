from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    """Evidence and decisions: evaluations, policies, reviews, the audit chain."""

    name = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        """Plug into registry's lineage graphs and ``/healthz`` (the MLflow store)."""
        from config import health
        from governance import tracking
        from governance.lineage import (
            decision_nodes,
            evaluation_nodes,
            modification_nodes,
        )
        from registry.lineage import register_downstream_provider

        health.register("mlflow", tracking.health_check)
        # Evaluations by status and failure code on /metrics.
        from governance import metrics

        metrics.register()

        # Catalogue changes the registry announces owe MLflow their record.
        from audit.signals import announce_when, event_recorded
        from governance.services import outbox

        announce_when(outbox.is_catalogue_event)
        event_recorded.connect(
            outbox.on_catalogue_event, dispatch_uid="governance.on_catalogue_event"
        )

        register_downstream_provider(evaluation_nodes)
        register_downstream_provider(decision_nodes)
        register_downstream_provider(modification_nodes)
