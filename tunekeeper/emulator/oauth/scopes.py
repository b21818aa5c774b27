"""The OAuth scopes that open the emulated Google Cloud surfaces (Vertex AI and Cloud Storage)."""

from __future__ import annotations

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
STORAGE_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/devstorage.full_control",
        "https://www.googleapis.com/auth/devstorage.read_write",
        "https://www.googleapis.com/auth/devstorage.read_only",
    }
)
USABLE_SCOPES = frozenset({CLOUD_PLATFORM_SCOPE, *STORAGE_SCOPES})


def parse_scopes(value: object) -> frozenset[str]:
    """A JWT's `scope` claim (space-separated) as a set; empty when it is missing or not a string."""
    return frozenset(value.split()) if isinstance(value, str) else frozenset()


def usable(scopes: frozenset[str]) -> bool:
    """True when at least one scope opens a surface the emulator serves; other scopes ride along unchecked."""
    return not scopes.isdisjoint(USABLE_SCOPES)
