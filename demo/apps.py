from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo catalogue and its ``load_demo`` / ``load_demo_evidence`` commands."""

    name = "demo"
    verbose_name = "Demo"
