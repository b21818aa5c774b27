"""What of the configuration is secret, and how the rest may be shown: URLs without their passwords, whether
a URL would carry a credential in clear text, and the secrets a config file holds (valid or not) for the log
redactor. Imports nothing of tunekeeper."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Keys whose values a one-line error never shows (nor the section or document that holds them).
SECRET_KEYS = ("gemini.api_key", "web.token")
# Names of keys and URL parameters that may hold a credential.
_SECRET_PARAMETER = re.compile(r"pass|secret|key|token|auth|cred", re.IGNORECASE)


def is_secret(key: str) -> bool:
    """A secret key itself, anything under it, or a section or document that holds one."""
    return any(key == secret or secret.startswith(f"{key}.") or key.startswith(f"{secret}.") for secret in SECRET_KEYS)


def display_url(url: str) -> str:
    """`url` as logs and errors may show it: no password in its user part, no value of a parameter that may
    hold a credential (libpq and asyncpg take `?password=`). Not a URL: "<hidden>"."""
    scheme, separator, rest = url.partition("://")
    if not separator or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return "<hidden>"
    rest, question, query = rest.partition("?")
    if "@" in rest:  # the last '@' ends the user part: a password may hold an unencoded '@' or '/'
        userinfo, _, host = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}{':***' if colon else ''}@{host}"
    if question:
        parameters = []
        for item in query.split("&"):
            name, equals, value = item.partition("=")
            hidden = equals and (_SECRET_PARAMETER.search(unquote(name)) or "@" in value)
            parameters.append(f"{name}=***" if hidden else item)
        rest = f"{rest}?{'&'.join(parameters)}"
    return f"{scheme}://{rest}"


def secrets_in_file(config_file: Path | None) -> list[str]:
    """What may be a secret in a config file, valid or not, so that a rejected reload can be logged safely: the
    values of secret keys and of any key named like one (a misspelt `api-key`), and the passwords in URLs."""
    if config_file is None:
        return []
    try:
        document = tomllib.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    found: list[str] = []

    def visit(value: object, key: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                visit(item, f"{key}.{name}" if key else str(name))
        elif isinstance(value, list):
            for item in value:
                visit(item, key)
        elif isinstance(value, str):
            name = key.rpartition(".")[2]
            if is_secret(key) or _SECRET_PARAMETER.search(name):
                found.append(value)
            found.extend(_url_passwords(value))

    visit(document, "")
    return found


def _url_passwords(text: str) -> list[str]:
    """The password of a URL's user part and of its credential-like parameters, as written and decoded."""
    _, separator, rest = text.partition("://")
    if not separator:
        return []
    rest, _, query = rest.partition("?")
    found = []
    if "@" in rest:
        _, colon, password = rest.rpartition("@")[0].partition(":")
        if colon and password:
            found.append(password)
    for item in query.split("&"):
        name, equals, value = item.partition("=")
        if equals and value and _SECRET_PARAMETER.search(unquote(name)):
            found.append(value)
    return found + [unquote(secret) for secret in found]


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def in_clear_text(url: str) -> bool:
    """Whether a request to `url` could be read on the way: anything but https://, or http:// to loopback."""
    if url.startswith("https://"):
        return False
    if not url.startswith("http://"):
        return True
    try:
        return not is_loopback(urlsplit(url).hostname)
    except ValueError:
        return True
