from django.apps import AppConfig


class RegistryConfig(AppConfig):
    """The catalogue: agencies, people, licences, datasets, models, versions."""

    name = "registry"
    verbose_name = "Registry"
