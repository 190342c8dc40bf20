"""One module per resource, each mounted on the app under /api/v1.

The resource routers are included in the app itself, not in a parent `/api/v1` router: this
FastAPI matches an included router level by level (each level tries its routes once to match
and again to pick one), so every level of nesting is paid for by every request.

Every operation refuses query parameters it does not declare (422 naming them): the ones that
need a login through their caller dependency (`app.api.deps.get_caller`), so that a refused
caller hears 401 first, and the login routes through `KnownQuery`.
"""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.api.deps import KnownQuery
from app.api.routes import (
    api_keys,
    assignment_rules,
    auth,
    capture,
    capture_forms,
    events,
    imports,
    leads,
    users,
    webhooks,
)

API_PREFIX = "/api/v1"


def include_api_routes(app: FastAPI) -> None:
    app.include_router(auth.router, prefix=API_PREFIX, dependencies=[KnownQuery])
    app.include_router(users.router, prefix=API_PREFIX)
    app.include_router(api_keys.router, prefix=API_PREFIX)
    app.include_router(leads.router, prefix=API_PREFIX)
    app.include_router(imports.router, prefix=API_PREFIX)
    app.include_router(webhooks.router, prefix=API_PREFIX)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(assignment_rules.router, prefix=API_PREFIX)
    app.include_router(capture_forms.router, prefix=API_PREFIX)
    app.include_router(capture.router, prefix=API_PREFIX, dependencies=[KnownQuery])


def match_leads_first(app: FastAPI) -> None:
    """Try the /leads routes first when matching a request, and document every route in the
    order it was added all the same. A request is matched against the app's routes in turn,
    and this FastAPI tries each included router's routes twice (to match, then to pick), so a
    lead request that went past the health, auth and users routes first spent about a tenth
    of its CPU on routing (py-spy, issue 12). Only the order of trying changes: no two routes
    match the same request, and `/openapi.json` is generated from the documented order."""
    routes = app.router.routes
    documented = list(routes)
    routes.sort(key=lambda route: getattr(route, "original_router", None) is not leads.router)
    app.openapi = _in_order(app, documented)  # type: ignore[method-assign]


def _in_order(app: FastAPI, documented: list[Any]) -> Callable[[], dict[str, Any]]:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            matching = list(app.router.routes)
            added = [route for route in matching if route not in documented]  # since: last
            app.router.routes[:] = [*documented, *added]
            try:
                capture.document_submission(generate())
            finally:
                app.router.routes[:] = matching
        return app.openapi_schema

    return openapi
