"""The service's exception tree. Raised where detected; translated to HTTP or CLI messages at the edge.

    VppError
    ├── NotFound          a named thing does not exist            → 404
    ├── Conflict          the request contradicts what is stored  → 409
    ├── Forbidden         the caller's role may not do this        → 403
    ├── Unauthorized      no or unknown bearer token               → 401
    ├── InvalidInput      a field is wrong (beyond pydantic)       → 422
    └── StoreUnavailable  the store cannot be reached              → 503
"""

from __future__ import annotations


class VppError(Exception):
    """Base of every error the service raises on purpose."""

    http_status = 500


class NotFound(VppError):
    http_status = 404


class Conflict(VppError):
    http_status = 409


class Forbidden(VppError):
    http_status = 403


class Unauthorized(VppError):
    http_status = 401


class InvalidInput(VppError):
    """A request field is wrong. ``field`` names it (dotted path)."""

    http_status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StoreUnavailable(VppError):
    http_status = 503
