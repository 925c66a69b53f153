"""Web dashboard for park admins, enterprises and the grid, served by the service itself (see docs/dashboard.md)."""

from vpp.dashboard.routes import API_ROUTES, add_dashboard

__all__ = ["API_ROUTES", "add_dashboard"]
