"""A real OpenID Connect provider for the single sign-on tests.

A tiny Django project of its own (django-oauth-toolkit's OIDC provider on a
SQLite database in a temporary folder, an RSA key made at start), run in a
second process by ``tests.oidc_provider.process.running_provider``. It plays
an agency's identity provider: it signs its users in with a password, asks
their consent, and issues RS256 ID tokens and userinfo answers carrying the
claims the test gave each user (``agency``, ``civitas_role``, ...).
"""
