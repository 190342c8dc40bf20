"""One module per resource, each mounted on the app under /api/v1.

The resource routers are included in the app itself, not in a parent `/api/v1` router: this
FastAPI matches an included router level by level (each level tries its routes once to match
and again to pick one), so every level of nesting is paid for by every request.

Every operation refuses query parameters it does not declare (422 naming them): the ones that
need a login through their caller dependency (`app.api.deps.get_caller`), so that a refused
caller hears 401 first, and the login routes through `KnownQuery`.
"""

from fastapi import FastAPI

from app.api.deps import KnownQuery
from app.api.routes import auth, leads, users

API_PREFIX = "/api/v1"


def include_api_routes(app: FastAPI) -> None:
    app.include_router(auth.router, prefix=API_PREFIX, dependencies=[KnownQuery])
    app.include_router(users.router, prefix=API_PREFIX)
    app.include_router(leads.router, prefix=API_PREFIX)
