"""The dashboard's routes, one module per area; `ROUTERS` is what `app.create_app` includes.

A module has `router = APIRouter(...)` and its pages; a page names its roles with a dependency
(`deps.ANY_ROLE`, `deps.SLT_ONLY`, `deps.ADMIN_ONLY`, `deps.viewer(roles)`), reads its form with
`deps.form(...)` and renders a template with `templating.render`. No SQL here: queries are
store methods (`store/live.py` and `store/tokens.py` for the dashboard's own).
"""

from __future__ import annotations

from . import (
    admin,
    alerts,
    api,
    auth,
    exceptions,
    grants,
    lockers,
    opens,
    people,
    reports,
    tokens,
    trail,
)

ROUTERS = [
    auth.router,
    lockers.router,
    alerts.router,
    opens.router,
    grants.router,
    exceptions.router,
    trail.router,
    reports.router,
    people.router,
    admin.router,
    tokens.router,
    api.router,
    api.pages,
]
