from django.apps import AppConfig


class RegistryConfig(AppConfig):
    """The catalogue: agencies, people, licences, datasets, models, versions."""

    name = "registry"
    verbose_name = "Registry"

    def ready(self) -> None:
        """Record account changes made by Django's own views and commands, and
        remember each new session's generation (sign out everywhere)."""
        from registry.accounts import connect_account_audit
        from registry.sessions import connect_session_generation

        connect_account_audit()
        connect_session_generation()
