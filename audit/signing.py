"""The platform's Ed25519 signing key and DSSE envelopes signed with it.

One key signs audit checkpoints, evaluation attestations and decisions; each
kind of statement has its own ``payloadType`` so a signature over one can
never be passed off as another. The key comes from ``CIVITAS_SIGNING_KEY_FILE``
(PKCS8 PEM). Without it, a key is generated on first use under
``VAR_DIR/signing-key.pem`` (mode 0600) — fine for a laptop, wrong for
production, hence the warning. Verification is defined in the standalone
``audit.verify`` so auditors and the platform run the same code.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from audit.verify import (
    VerificationError,
    key_id,
    pae,
    public_key_pem_of,
)
from audit.verify import verify_envelope as _verify_envelope

__all__ = [
    "VerificationError",
    "key_file",
    "platform_key_id",
    "public_key",
    "public_key_pem",
    "sign_envelope",
    "signing_key_problem",
    "verify_envelope",
]

logger = logging.getLogger(__name__)

GENERATED_KEY_NAME = "signing-key.pem"


def key_file() -> Path:
    """The path of the private key: the configured file or the generated one."""
    configured = getattr(settings, "CIVITAS_SIGNING_KEY_FILE", "")
    if configured:
        return Path(configured)
    return Path(settings.VAR_DIR) / GENERATED_KEY_NAME


def _generate(path: Path) -> None:
    """Write a new PKCS8 key to ``path`` (0600), unless another process won."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written to a private temporary file and hard-linked into place: the name
    # appears complete or not at all, and two processes starting together keep
    # whichever key was linked first.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-key-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
    finally:
        Path(tmp).unlink(missing_ok=True)
    logger.warning(
        "generated a platform signing key at %s; production must set "
        "CIVITAS_SIGNING_KEY_FILE to a key it provisions and backs up",
        path,
    )


@functools.lru_cache(maxsize=4)
def _load(path_text: str, generate: bool) -> Ed25519PrivateKey:
    path = Path(path_text)
    if generate and not path.exists():
        _generate(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"CIVITAS_SIGNING_KEY_FILE: cannot read {path}: {exc.strerror}"
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            f"{path} is not an unencrypted PKCS8 PEM private key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"{path} holds a key that is not Ed25519")
    if path.stat().st_mode & 0o077:
        logger.warning("the platform signing key %s is readable by others", path)
    return key


def _private_key() -> Ed25519PrivateKey:
    """The platform private key, loaded once per path (generated if allowed).

    Raises ImproperlyConfigured if the configured file is missing, unreadable
    or not an Ed25519 PKCS8 key.
    """
    problem = signing_key_problem()
    if problem:
        raise ImproperlyConfigured(problem)
    configured = bool(getattr(settings, "CIVITAS_SIGNING_KEY_FILE", ""))
    return _load(str(key_file()), not configured)


def signing_key_problem() -> str:
    """Why the platform may not sign with the settings it has, or "".

    With ``DEBUG`` off, a key is generated only when
    ``CIVITAS_SIGNING_KEY_GENERATE`` says so explicitly (``make run``);
    otherwise ``CIVITAS_SIGNING_KEY_FILE`` must name the provisioned key.
    """
    if getattr(settings, "CIVITAS_SIGNING_KEY_FILE", ""):
        return ""
    if settings.DEBUG or getattr(settings, "CIVITAS_SIGNING_KEY_GENERATE", False):
        return ""
    return (
        "CIVITAS_SIGNING_KEY_FILE must be set when DEBUG is off: it names the "
        "platform's Ed25519 signing key (PKCS8 PEM), provisioned and backed up "
        "(see docs/audit.md). Set CIVITAS_SIGNING_KEY_GENERATE=true to let a "
        "laptop generate one under CIVITAS_VAR_DIR, as `make run` does."
    )


def public_key() -> Ed25519PublicKey:
    """The platform public key."""
    return _private_key().public_key()


def public_key_pem() -> str:
    """The platform public key as PEM (SubjectPublicKeyInfo), for auditors."""
    return public_key_pem_of(public_key())


def platform_key_id() -> str:
    """The key id of the platform key (hex SHA-256 of its DER public key)."""
    return key_id(public_key())


def sign_envelope(payload: bytes, payload_type: str) -> dict[str, Any]:
    """Sign ``payload`` as a DSSE envelope with the platform key.

    The signature covers PAE(payload_type, payload), so the type is
    authenticated too. Returns ``{"payload", "payloadType", "signatures":
    [{"keyid", "sig"}]}`` with standard base64. Raises TypeError if
    ``payload`` is not bytes, ValueError for an empty ``payload_type``.
    """
    if not isinstance(payload, bytes):
        raise TypeError("sign_envelope signs bytes: serialise the statement first")
    if not payload_type:
        raise ValueError("a payload type is required")
    key = _private_key()
    signature = key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [
            {
                "keyid": key_id(key.public_key()),
                "sig": base64.b64encode(signature).decode("ascii"),
            }
        ],
    }


def verify_envelope(
    envelope: Any,
    public_key: Ed25519PublicKey | str | bytes,
    *,
    payload_type: str | None = None,
) -> bytes:
    """Return the payload of ``envelope`` if ``public_key`` signed it.

    ``public_key`` is a key object or its PEM. Raises VerificationError for a
    malformed envelope, another ``payload_type`` than required, or no
    signature that verifies.
    """
    return _verify_envelope(envelope, public_key, payload_type=payload_type)
