"""Start the test OIDC provider: ``python -m tests.oidc_provider.serve CONFIG``.

Creates its SQLite database, its users and the portal's registered client
(confidential, authorization code, RS256, the portal's callback as redirect
URI), then serves on the config's port until terminated.
"""

import os
import sys


def main(config_path: str) -> None:
    os.environ["OIDC_PROVIDER_CONFIG"] = config_path
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.oidc_provider.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from oauth2_provider.models import get_application_model

    call_command("migrate", verbosity=0, interactive=False)
    config = settings.CONFIG
    for user in config["users"]:
        get_user_model().objects.create_user(
            username=user["username"], password=user["password"]
        )
    client = config["client"]
    get_application_model().objects.create(
        name=client["name"],
        client_id=client["id"],
        client_secret=client["secret"],
        client_type="confidential",
        authorization_grant_type="authorization-code",
        redirect_uris=client["redirect_uri"],
        algorithm="RS256",
        skip_authorization=False,
    )
    call_command(
        "runserver", f"127.0.0.1:{config['port']}", use_reloader=False, verbosity=0
    )


if __name__ == "__main__":
    main(sys.argv[1])
