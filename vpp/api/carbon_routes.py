"""Carbon attribution: per enterprise and park indicators (issue 6)."""

from __future__ import annotations

from vpp.api.routes import Route

ROUTES: tuple[Route, ...] = ()
