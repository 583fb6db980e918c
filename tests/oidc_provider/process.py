"""Run the test OIDC provider in a second process, for as long as a test needs.

``running_provider`` writes the provider's config (a fresh RSA key, a SQLite
file in a temporary folder, the client registered with the portal's
callback), starts ``tests.oidc_provider.serve`` on a free port, waits until
its discovery document answers, and terminates it at the end.
``sso_settings`` is what the portal's settings need to use it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "civitas-portal"
CLIENT_SECRET = "portal-client-secret-for-tests-only-0123456789"
PROVIDER_NAME = "Agency ID"


@dataclass
class Provider:
    """A running provider: its address, and its users' claims (changeable)."""

    url: str
    issuer: str
    config_path: Path
    log_path: Path

    def set_claims(self, username: str, claims: dict) -> None:
        """Give ``username`` new claims from the next sign-in on."""
        config = json.loads(self.config_path.read_text(encoding="utf-8"))
        for user in config["users"]:
            if user["username"] == username:
                user["claims"] = claims
        self.config_path.write_text(json.dumps(config), encoding="utf-8")

    def sso_settings(self) -> dict:
        """The portal's settings for this provider (explicit endpoints)."""
        return {
            "OIDC_RP_CLIENT_ID": CLIENT_ID,
            "OIDC_RP_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_PROVIDER_NAME": PROVIDER_NAME,
            "OIDC_OP_DISCOVERY_URL": "",
            "OIDC_OP_ISSUER": self.issuer,
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.issuer}/authorize/",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.issuer}/token/",
            "OIDC_OP_USER_ENDPOINT": f"{self.issuer}/userinfo/",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.issuer}/.well-known/jwks.json",
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the OIDC provider exited:\n{log.read_text()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the OIDC provider did not answer:\n{log.read_text()}")


@contextmanager
def running_provider(*, redirect_uri: str, users: list[dict]) -> Iterator[Provider]:
    """A provider serving ``users`` (username, password, claims) for the portal."""
    with tempfile.TemporaryDirectory(prefix="oidc-provider-") as folder:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = {
            "port": port,
            "db": str(Path(folder) / "provider.sqlite3"),
            "issuer": f"{url}/o",
            "rsa_private_key": _rsa_pem(),
            "client": {
                "name": "Civitas portal",
                "id": CLIENT_ID,
                "secret": CLIENT_SECRET,
                "redirect_uri": redirect_uri,
            },
            "users": users,
        }
        config_path = Path(folder) / "config.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        log_path = Path(folder) / "provider.log"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "DATABASE_", "PYTEST_"))
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.oidc_provider.serve", str(config_path)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_ready(f"{url}/o/.well-known/openid-configuration", process, log_path)
            yield Provider(
                url=url,
                issuer=config["issuer"],
                config_path=config_path,
                log_path=log_path,
            )
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
