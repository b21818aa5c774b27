"""`tunekeeper config check`: validate the configuration and print the effective settings with their sources.

Each setting is shown with where its value came from (the environment, a systemd credential, the file, or the
default), in the order the loader weighs them. Secrets are never printed: a secret setting shows only whether
it is set, a database URL is shown without its password. A setting that fails validation ends the command as
every command ends on one: one line naming the key, exit status 78.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tunekeeper.cli.usage import add_command
from tunekeeper.config import (
    CREDENTIAL_NAME,
    DATABASE_PASSWORD_CREDENTIAL,
    EX_CONFIG,
    WEB_TOKEN_CREDENTIAL_NAME,
    ConfigError,
    Settings,
    load_settings,
    require_credentials,
)
from tunekeeper.secrecy import display_url, is_secret


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="the configuration: check it", description="The configuration.")
    commands = parser.add_subparsers(dest="config_command", required=True, metavar="{check}")
    check = add_command(
        commands,
        "check",
        summary="validate the configuration and print the effective settings with their sources",
        description="Load the configuration exactly as `tunekeeper run` does (the file, then the systemd credential,\n"
        "then TUNEKEEPER_* environment variables, each overriding the one before) and print every setting with its\n"
        "source, secrets masked. The backend's credential is checked too (the Gemini API key, or Vertex AI's\n"
        "project, bucket and key file).",
        exits={0: "the configuration is valid and the backend's credential is present"},
    )
    check.add_argument("--json", action="store_true", help="print a JSON object: settings, sources, credentials")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    config_file: Path | None = args.config
    settings = load_settings(config_file)  # a ConfigError goes up to main: one line, exit 78
    try:
        require_credentials(settings)
        credentials = "ok"
        status = 0
    except ConfigError as exc:
        credentials = str(exc)
        status = EX_CONFIG
    rows = effective_settings(settings, config_file)
    if args.json:
        print(
            json.dumps(
                {
                    "config_file": str(config_file) if config_file else None,
                    "valid": status == 0,
                    "credentials": credentials,
                    "settings": {key: {"value": value, "source": source} for key, value, source in rows},
                },
                indent=2,
            )
        )
    else:
        print(f"# config file: {config_file or 'none (defaults and environment only)'}")
        width = max(len(key) for key, _, _ in rows)
        for key, value, source in rows:
            print(f"{key:<{width}} = {json.dumps(value)}  # {source}")
        print(f"# credentials: {credentials}")
    if status:
        print(credentials, file=sys.stderr)
    return status


def effective_settings(settings: Settings, config_file: Path | None) -> list[tuple[str, Any, str]]:
    """(dotted key, shown value, source) for every setting, secrets masked."""
    in_file = _flatten(tomllib.loads(config_file.read_text())) if config_file is not None else {}
    from_credential = _credential_keys()
    rows = []
    for key, value in _flatten(settings.model_dump(mode="json")).items():
        env = "TUNEKEEPER_" + key.upper().replace(".", "__")
        if env in os.environ or any(name.startswith(env + "__") for name in os.environ):
            source = f"environment {env}"
        elif key in ("gemini.api_key", "web.token") and key in from_credential:
            source = f"systemd credential {from_credential[key]}"
        elif key in in_file or any(name.startswith(key + ".") for name in in_file):
            source = f"file {config_file}"
        else:
            source = "default"
        if key == "database.url" and key in from_credential:
            source += f", its password from the systemd credential {from_credential[key]}"
        rows.append((key, _shown(key, value, settings), source))
    return rows


def _shown(key: str, value: Any, settings: Settings) -> Any:
    if is_secret(key):
        secret = _lookup(settings, key)
        is_set = bool(secret.get_secret_value()) if isinstance(secret, SecretStr) else bool(secret)
        return "<set>" if is_set else "<not set>"
    if isinstance(value, str) and "://" in value:
        return display_url(value)  # no password, nor a parameter that may hold a credential
    return value


def _lookup(settings: Settings, key: str) -> Any:
    found: Any = settings
    for part in key.split("."):
        found = getattr(found, part)
    return found


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; tables that are values (labels) stay whole under their key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _credential_keys() -> dict[str, str]:
    """Settings that a systemd credential supplies (wholly, or the password in a URL), by the credential's name."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    given = {
        "gemini.api_key": CREDENTIAL_NAME,
        "database.url": DATABASE_PASSWORD_CREDENTIAL,
        "web.token": WEB_TOKEN_CREDENTIAL_NAME,
    }
    return {key: name for key, name in given.items() if (Path(directory) / name).is_file()}
