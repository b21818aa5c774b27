"""Service accounts the token endpoint accepts, and the key files that let Google's SDKs sign in as one.

One RSA-2048 key pair is generated per emulator, at first use (generation takes 50-100 ms, so an emulator that
never hands out a key file never pays for it). Each project asked for gets its own service account,
`tunekeeper-emulator@PROJECT.iam.gserviceaccount.com`, with its own `private_key_id` and that one key pair. The
private key is generated locally, never leaves the emulator except in a key file, and is never a real
credential. Accounts outlive `/emulator/reset`, so a test's key file stays valid.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tunekeeper.emulator.config import DEFAULT_PROJECT, validate_project_id

ACCOUNT_NAME = "tunekeeper-emulator"
# A key file's fixed fields, as Google writes them (clients read only `token_uri` of these).
AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
ROBOT_CERTS_URL = "https://www.googleapis.com/robot/v1/metadata/x509/"
UNIVERSE_DOMAIN = "googleapis.com"
TOKEN_PATH = "/token"


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    project_id: str
    client_email: str
    client_id: str  # 21 digits, as Google's
    private_key_id: str  # 40 hex digits; the `kid` of the JWTs signed with this account's key
    public_key: rsa.RSAPublicKey


class ServiceAccounts:
    """The registry of accepted service accounts, by key id and by email."""

    def __init__(self) -> None:
        self._private_key: rsa.RSAPrivateKey | None = None
        self._by_key_id: dict[str, ServiceAccount] = {}
        self._by_email: dict[str, ServiceAccount] = {}

    def by_key_id(self, key_id: str) -> ServiceAccount | None:
        return self._by_key_id.get(key_id)

    def by_email(self, email: str) -> ServiceAccount | None:
        return self._by_email.get(email)

    def account(self, project: str = DEFAULT_PROJECT) -> ServiceAccount:
        """The project's service account, registered (and the key pair generated) at first use."""
        email = f"{ACCOUNT_NAME}@{validate_project_id(project)}.iam.gserviceaccount.com"
        known = self._by_email.get(email)
        if known is not None:
            return known
        account = ServiceAccount(
            project_id=project,
            client_email=email,
            client_id=str(secrets.randbelow(9 * 10**20) + 10**20),
            private_key_id=secrets.token_hex(20),
            public_key=self._key().public_key(),
        )
        self._by_key_id[account.private_key_id] = account
        self._by_email[email] = account
        return account

    def key_file(self, base_url: str, project: str = DEFAULT_PROJECT) -> dict[str, Any]:
        """A service-account key file's content, as Google's console downloads it, whose `token_uri` is the
        emulator's token endpoint."""
        account = self.account(project)
        private_pem = self._key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {
            "type": "service_account",
            "project_id": account.project_id,
            "private_key_id": account.private_key_id,
            "private_key": private_pem.decode("ascii"),
            "client_email": account.client_email,
            "client_id": account.client_id,
            "auth_uri": AUTH_URI,
            "token_uri": base_url + TOKEN_PATH,
            "auth_provider_x509_cert_url": CERTS_URL,
            "client_x509_cert_url": ROBOT_CERTS_URL + quote(account.client_email, safe=""),
            "universe_domain": UNIVERSE_DOMAIN,
        }

    def _key(self) -> rsa.RSAPrivateKey:
        if self._private_key is None:
            self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._private_key


def write_key_file(path: str | Path, content: dict[str, Any]) -> Path:
    """Write a key file readable by its owner only (0600), atomically: a reader never sees half a file."""
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=".service-account-", dir=target.parent)  # mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(content, file, indent=2)
            file.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
