"""Settlement statements: per enterprise and for the park (issue 5)."""

from __future__ import annotations

from vpp.api.routes import Route

ROUTES: tuple[Route, ...] = ()
