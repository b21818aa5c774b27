"""Where a transport gets the credential of a request when it is an OAuth access token rather than an API key.

A protocol, so that the transport depends on no auth library: `vertex/auth.py` implements it with
gcloud-aio-auth, tests may implement it with a dict.
"""

from __future__ import annotations

from typing import Protocol


class TokenSource(Protocol):
    async def authorization(self) -> str:
        """The value of an `Authorization` header, `"Bearer <token>"`, refreshed before the token expires.

        Raises a `ServiceError` when no token can be had: TransientError when the token endpoint is unreachable
        or failing (worth retrying), Unauthenticated when it refuses the credentials.
        """
        ...

    def invalidate(self) -> None:
        """Forget the current token (the service answered 401 to it): the next `authorization()` fetches anew."""
        ...
