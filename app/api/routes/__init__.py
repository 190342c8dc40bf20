"""One module per resource; `api_router` mounts them under /api/v1."""

from fastapi import APIRouter

from app.api.deps import KnownQuery, KnownQueryAfterLogin
from app.api.routes import auth, leads, users

api_router = APIRouter(prefix="/api/v1")
# Every operation refuses query parameters it does not declare (422 naming them).
api_router.include_router(auth.router, dependencies=[KnownQuery])
api_router.include_router(users.router, dependencies=[KnownQueryAfterLogin])
api_router.include_router(leads.router, dependencies=[KnownQueryAfterLogin])
