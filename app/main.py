"""The FastAPI application: `create_app()` wires settings, database, routers and error handling.

The process keeps no state of its own beyond the connection pool: sessions, users and limits all
live in the database, so any number of app processes can serve behind one PostgreSQL.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.cors import ApiCors, CaptureCors
from app.api.errors import install_error_handlers
from app.api.limits import BodySizeLimit
from app.api.observability import RequestObserver, page_csp
from app.api.routes import include_api_routes, match_leads_first
from app.api.routes.health import router as health_router
from app.api.routes.leads import IMPORT_PATH
from app.bootstrap import resolve_secret_key
from app.database import create_engine, create_session_factory, session_turns_for
from app.services.reader import engine_reader, engine_writer, read_pool_for
from app.workers.event_hub import EventHub, listen_for_events
from app.workers.imports import start_import_worker
from app.workers.webhooks import start_webhook_worker

DOCS_ASSETS = "/docs-assets"
OPENAPI_URL = "/openapi.json"

logger = logging.getLogger(__name__)


def create_app(*, engine: AsyncEngine | None = None) -> FastAPI:
    """Build the app from the settings in force (`get_settings()`, which is also what every
    request reads; tests install theirs with `app.config.use_settings`), with the signing key
    resolved into them. `engine` lets tests hand in their own database; otherwise one is made
    from the settings when the app starts and disposed when it stops. uvicorn calls it with no
    arguments (`app.main:create_app`, factory=True), once per worker process."""
    settings = resolve_secret_key()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        app.state.engine = engine or create_engine(settings=settings)
        app.state.session_factory = create_session_factory(app.state.engine)
        app.state.read_session_factory = create_session_factory(app.state.engine, read_only=True)
        app.state.session_turns = session_turns_for(app.state.engine, settings)
        read_pool = read_pool_for(app.state.engine, settings) if own_engine else None
        if own_engine:  # else set below, or by a test (tests/helpers.py)
            app.state.reader = engine_reader(app.state.engine, read_pool, settings)
            app.state.writer = engine_writer(app.state.engine, read_pool, settings)
        _settle_garbage_collector()
        listen_for_events(app.state.event_hub, app.state.engine, settings)
        worker = start_webhook_worker(app, settings) if own_engine else None
        imports = start_import_worker(app, settings) if own_engine else None
        try:
            yield
        finally:
            # Side by side: each may wait a moment for a statement stuck in SQLite's busy wait.
            await asyncio.gather(*(w.stop() for w in (imports, worker) if w is not None))
            await app.state.event_hub.stop()
            if own_engine:
                # Runs after the server has let the requests in flight finish (SIGTERM).
                if read_pool is not None:
                    await read_pool.close()
                await app.state.engine.dispose()
                logger.info("shutdown complete: database pool closed")

    app = FastAPI(
        title="CRM Leads API",
        version="1.0.0",
        summary="Lead management for sales teams: leads, scoring, history, bulk changes.",
        openapi_url=OPENAPI_URL,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    if engine is not None:  # usable before the lifespan runs, e.g. under httpx's ASGITransport
        app.state.engine = engine
        app.state.session_factory = create_session_factory(engine)
        app.state.read_session_factory = create_session_factory(engine, read_only=True)
        app.state.session_turns = session_turns_for(engine, settings)
        app.state.reader = engine_reader(engine, None, settings)
        app.state.writer = engine_writer(engine, None, settings)

    app.state.query_names = {}  # app/api/deps.py: each operation's query parameters
    # What wakes this process's live streams (app/workers/event_hub.py); it listens on
    # PostgreSQL once the app has started.
    app.state.event_hub = EventHub()
    # Turns at the password checks of this process (app/api/deps.py `login_turn`).
    app.state.login_turns = asyncio.Semaphore(settings.login_hash_concurrency)
    install_error_handlers(app)
    app.include_router(health_router)
    include_api_routes(app)
    docs_policies = _mount_docs(app)
    match_leads_first(app)

    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        larger={IMPORT_PATH: settings.import_max_bytes},
    )
    app.add_middleware(CaptureCors)
    if settings.cors_origins:
        app.add_middleware(
            ApiCors,
            allow_origins=list(settings.cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location", "X-Request-ID"],
        )
    # Added last, so it is outermost: its headers reach every answer, the others' included.
    app.add_middleware(RequestObserver, page_policies=docs_policies, assets_prefix=DOCS_ASSETS)
    return app


def operation_id(route: APIRoute) -> str:
    """Each operation's id is its route function's name in camelCase (`list_leads` ->
    `listLeads`): short, stable, and what a generated client names its methods."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def _settle_garbage_collector() -> None:
    """Everything loaded so far (modules, mappers, compiled routes) lives as long as the
    process: move it out of the collector's sight, so a full collection under load scans only
    what requests allocate instead of stalling on the whole heap (issue 5's p99 target). A
    larger first generation makes collections rarer; request garbage is mostly acyclic and
    freed by reference counting anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


GC_GEN0_THRESHOLD = 10_000


def _mount_docs(app: FastAPI) -> dict[str, str]:
    """Swagger UI and ReDoc with their JavaScript and CSS served from an installed package, so
    the docs work on a machine with no internet access. Each page is rendered once, here, so
    that its Content-Security-Policy can allow exactly its inline scripts: the policies are
    returned, by path, for RequestObserver."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    oauth2_redirect = "/docs/oauth2-redirect"
    pages = {
        "/docs": get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        ).body,
        oauth2_redirect: get_swagger_ui_oauth2_redirect_html().body,
        "/redoc": get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        ).body,
    }
    for path, body in pages.items():
        app.add_api_route(path, _html_page(bytes(body)), methods=["GET"], include_in_schema=False)
    return {path: page_csp(bytes(body)) for path, body in pages.items()}


def _html_page(body: bytes) -> Callable[[], Awaitable[HTMLResponse]]:
    async def page() -> HTMLResponse:
        return HTMLResponse(body)

    return page
