"""Webhook secrets: generation, encryption at rest, Standard Webhooks signatures.

Signatures come from the ``standardwebhooks`` library (the Standard Webhooks
project's own): ``v1,<base64 HMAC-SHA256 of "msg_id.timestamp.body">`` keyed
by the base64-decoded ``whsec_`` secret. Secrets are stored with Fernet
(``cryptography``) under a key derived with HKDF from
``CIVITAS_WEBHOOK_ENCRYPTION_KEY``, or from ``SECRET_KEY`` when that is unset.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from standardwebhooks.webhooks import Webhook as StandardWebhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24 to 64 random bytes


class SecretUnreadable(Exception):
    """A stored secret does not decrypt: the encryption key changed."""


def new_secret() -> str:
    """A fresh ``whsec_<base64>`` secret of SECRET_BYTES random bytes."""
    raw = secrets.token_bytes(SECRET_BYTES)
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


def _fernet() -> Fernet:
    material = settings.CIVITAS_WEBHOOK_ENCRYPTION_KEY or settings.SECRET_KEY
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"civitas webhook secrets v1",
    ).derive(material.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(secret: str) -> str:
    """The secret as stored: a Fernet token."""
    return _fernet().encrypt(secret.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    """The secret a stored token holds; SecretUnreadable if the key changed."""
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise SecretUnreadable("the webhook secret does not decrypt") from exc


def signature_header(
    secrets_: list[str], *, msg_id: str, timestamp: datetime, body: str
) -> str:
    """The ``webhook-signature`` value: one ``v1,<sig>`` per secret, space-separated.

    ``timestamp`` must be aware; the header ``webhook-timestamp`` carries the
    same instant in whole seconds.
    """
    return " ".join(
        StandardWebhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=body)
        for secret in secrets_
    )
