from django.apps import AppConfig


class RegistryConfig(AppConfig):
    """The catalogue: agencies, people, licences, datasets, models, versions."""

    name = "registry"
    verbose_name = "Registry"

    def ready(self) -> None:
        """Record account changes made by Django's own views and commands."""
        from registry.accounts import connect_account_audit

        connect_account_audit()
