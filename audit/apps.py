from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The hash-chained audit log, its signed checkpoints and the security events."""

    name = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        """Stop start-up without a signing key; add the chain's /metrics gauges."""
        from django.core import checks

        from audit import metrics

        checks.register(check_signing_key)
        metrics.register()


def check_signing_key(app_configs=None, **kwargs):
    """System check (Error): DEBUG off and neither a key file nor leave to generate."""
    from django.core import checks

    from audit.signing import signing_key_problem

    problem = signing_key_problem()
    if not problem:
        return []
    return [checks.Error(problem, id="civitas.E001",
                         hint="Set CIVITAS_SIGNING_KEY_FILE=/path/to/signing_key.pem")]
