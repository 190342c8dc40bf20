"""Every error the API returns, in one shape and mapped in one place.

    {"detail": "<a sentence>", "code": "<snake_case>", "errors": [{"loc": [...], "msg": ...}]}

`errors` is present for validation errors only. Service exceptions map to a status by class
(`STATUS_BY_EXCEPTION`); FastAPI's own request validation and HTTP errors are reshaped to match;
anything unexpected becomes a 500 with no internals in the body, only a `request_id`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.idempotency import IDEMPOTENT_CALL, replayed
from app.schemas.common import CODE_BY_STATUS, DATABASE_UNAVAILABLE, ErrorResponse
from app.services.exceptions import (
    ApiKeyNotFoundException,
    AssignmentRuleNotFoundException,
    AuthenticationException,
    CaptureFormNotFoundException,
    ConflictException,
    CRMException,
    DatabaseException,
    DeliveryNotFoundException,
    DuplicateException,
    DuplicateLeadException,
    IdempotencyInProgressException,
    IdempotencyKeyReusedException,
    ImportNotFoundException,
    InactiveUserException,
    InvalidHeaderException,
    LeadNotFoundException,
    LoginBusyException,
    MatchCountChangedException,
    PermissionDeniedException,
    PreconditionFailedException,
    PreconditionRequiredException,
    SessionNotFoundException,
    TooManyAttemptsException,
    TooManySubmissionsException,
    UserNotFoundException,
    ValidationException,
    WebhookNotFoundException,
)
from app.services.faults import record_fault
from app.services.idempotency import IdempotentReplay
from app.services.idempotency_refusals import IdempotencyRefusals, is_kept
from app.services.lead_reads import LeadReads

logger = logging.getLogger(__name__)

STATUS_BY_EXCEPTION: dict[type[CRMException], int] = {
    LeadNotFoundException: status.HTTP_404_NOT_FOUND,
    UserNotFoundException: status.HTTP_404_NOT_FOUND,
    SessionNotFoundException: status.HTTP_404_NOT_FOUND,
    ApiKeyNotFoundException: status.HTTP_404_NOT_FOUND,
    WebhookNotFoundException: status.HTTP_404_NOT_FOUND,
    DeliveryNotFoundException: status.HTTP_404_NOT_FOUND,
    ImportNotFoundException: status.HTTP_404_NOT_FOUND,
    AssignmentRuleNotFoundException: status.HTTP_404_NOT_FOUND,
    CaptureFormNotFoundException: status.HTTP_404_NOT_FOUND,
    PermissionDeniedException: status.HTTP_403_FORBIDDEN,
    ValidationException: status.HTTP_422_UNPROCESSABLE_CONTENT,
    DuplicateException: status.HTTP_409_CONFLICT,
    ConflictException: status.HTTP_409_CONFLICT,
    InactiveUserException: status.HTTP_409_CONFLICT,
    PreconditionFailedException: status.HTTP_412_PRECONDITION_FAILED,
    IdempotencyKeyReusedException: status.HTTP_422_UNPROCESSABLE_CONTENT,
    IdempotencyInProgressException: status.HTTP_409_CONFLICT,
    PreconditionRequiredException: status.HTTP_428_PRECONDITION_REQUIRED,
    InvalidHeaderException: status.HTTP_400_BAD_REQUEST,
    AuthenticationException: status.HTTP_401_UNAUTHORIZED,
    TooManyAttemptsException: status.HTTP_429_TOO_MANY_REQUESTS,
    TooManySubmissionsException: status.HTTP_429_TOO_MANY_REQUESTS,
    LoginBusyException: status.HTTP_503_SERVICE_UNAVAILABLE,
    DatabaseException: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def error_response(
    status_code: int,
    detail: str,
    code: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = ErrorResponse(
        detail=detail, code=code, **({"errors": errors} if errors else {}), **extra
    )
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def status_code_name(status_code: int) -> str:
    """The code of an HTTP error no exception names (4xx without an entry: bad_request)."""
    fallback = "internal_error" if status_code >= 500 else "bad_request"
    return CODE_BY_STATUS.get(status_code, fallback)


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route: each listed status documented with ErrorResponse."""
    return {
        code: {"model": ErrorResponse, "description": status_code_name(code)}
        for code in status_codes
    }


def errors_beside_a_stream(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """`error_responses` for a route whose success is not JSON (a Server-Sent Events stream):
    FastAPI would document each error in the success's media type, but errors are JSON."""
    documented = error_responses(*status_codes)
    schema = {"$ref": "#/components/schemas/ErrorResponse"}
    for entry in documented.values():
        del entry["model"]
        entry["content"] = {"application/json": {"schema": schema}}
    return documented


def created_at(what: str, **headers: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route that answers 201: where the new resource is (and any
    other `headers` the answer carries)."""
    location = {"description": f"The new {what}'s URL.", "schema": {"type": "string"}}
    return {
        201: {
            "description": f"The {what} was created.",
            "headers": {"Location": location, **headers},
        }
    }


ETAG_HEADER = {
    "description": 'The lead\'s entity tag, "<id>-<version>": send it back in If-Match to change '
    "the lead only if nobody else has, or in If-None-Match to read it only if it changed.",
    "schema": {"type": "string"},
}


REPLAYED_HEADER = {
    "description": "`true` when this is the stored answer to an earlier request with the same "
    "Idempotency-Key (nothing was changed this time); absent otherwise.",
    "schema": {"type": "string", "enum": ["true"]},
}


def lead_answer(
    description: str = "The lead.", *, idempotent: bool = False
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route that answers one lead (200): its ETag header, and
    for a route that takes an Idempotency-Key the header saying an answer is a replay."""
    headers = {"ETag": ETAG_HEADER}
    if idempotent:
        headers["Idempotent-Replayed"] = REPLAYED_HEADER
    return {200: {"description": description, "headers": headers}}


def replayable(description: str) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route that takes an Idempotency-Key and answers 200."""
    return {200: {"description": description, "headers": {"Idempotent-Replayed": REPLAYED_HEADER}}}


NOT_MODIFIED = {
    304: {
        "description": "The lead still has the ETag sent in If-None-Match: no body.",
        "headers": {"ETag": ETAG_HEADER},
    }
}


async def _crm_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CRMException)
    status_code = next(
        (code for cls, code in STATUS_BY_EXCEPTION.items() if isinstance(exc, cls)),
        status.HTTP_400_BAD_REQUEST,
    )
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    if isinstance(exc, TooManyAttemptsException | TooManySubmissionsException | LoginBusyException):
        headers = {"Retry-After": str(exc.retry_after)}
    errors, extra = None, {}
    if isinstance(exc, ValidationException):
        errors = [{"loc": _service_loc(request, e["loc"]), "msg": e["msg"]} for e in exc.errors]
    elif isinstance(exc, InvalidHeaderException):
        errors = exc.errors
    elif isinstance(exc, PreconditionFailedException):
        headers, extra = {"ETag": exc.tag}, {"current_version": exc.current_version}
    elif isinstance(exc, DuplicateLeadException):
        extra = {"duplicates": exc.duplicates}
    elif isinstance(exc, MatchCountChangedException):
        extra = {"matched": exc.matched}
    response = error_response(status_code, exc.message, exc.code, errors, headers, **extra)
    call = getattr(request.state, IDEMPOTENT_CALL, None)
    if call is not None and is_kept(exc, status_code):
        await _keep_refusal(request, call, response)
    return response


async def _keep_refusal(request: Request, call: Any, response: Response) -> None:
    """The refusal as the answer of the request's Idempotency-Key; if that fails, the
    refusal still goes out (a retry then runs again, which is safe: nothing was changed)."""
    try:
        await IdempotencyRefusals.keep(request.app.state.writer, call, response)
    except Exception as exc:
        logger.warning("could not keep the refusal of an Idempotency-Key: %s", exc)


def _service_loc(request: Request, loc: list[Any]) -> list[Any]:
    """Service errors name a field; a client sent it in the query of a GET, else in the body."""
    if not loc or loc[0] in ("body", "query", "path", "header"):
        return loc
    return ["query" if request.method == "GET" else "body", *loc]


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refused = await _refused_caller(request)
    if refused is not None:  # a caller who may not act hears that first, as everywhere
        return await _crm_exception(request, refused)
    problem = ValidationException.of_pydantic(exc.errors())
    return error_response(422, problem.message, problem.code, problem.errors)


async def _refused_caller(request: Request) -> CRMException | None:
    """For a request refused before its read ran: the account's refusal, if it is refused.
    `request.state.caller` holds the token's claims until the account has been checked
    (app/api/deps.py)."""
    caller = getattr(request.state, "caller", None)
    if caller is None:
        return None
    try:
        await LeadReads.check_caller(request.app.state.reader, caller)
    except CRMException as refusal:
        return refusal
    return None


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(getattr(exc, "headers", None) or {})
    where = f"{request.method} {request.url.path}"
    if exc.status_code == status.HTTP_404_NOT_FOUND:
        detail = f"There is nothing at {request.url.path}; /docs lists every endpoint."
    elif exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        allowed = allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{where} is not supported; {request.url.path} accepts {', '.join(allowed)}."
    else:
        detail = exc.detail if isinstance(exc.detail, str) else "The request failed"
        detail = detail if detail.endswith(".") else detail + "."
    return error_response(
        exc.status_code, detail, status_code_name(exc.status_code), headers=headers or None
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for this path. Starlette's own `Allow` names
    only the methods of the first route that matched the path, and FastAPI makes one route per
    method. A path outside the document (the docs pages) falls back to that first route."""
    methods_by_path: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        request.app.state, "methods_by_path", None
    )
    if methods_by_path is None:
        paths = request.app.openapi()["paths"]
        methods_by_path = [  # literal paths first: /leads/statistics is no /leads/{lead_id}
            (_template(path), sorted(m.upper() for m in paths[path] if m in HTTP_METHODS))
            for path in sorted(paths, key=lambda path: path.count("{"))
        ]
        request.app.state.methods_by_path = methods_by_path
    for pattern, methods in methods_by_path:
        if pattern.fullmatch(request.url.path):
            return methods
    route = request.scope.get("route")
    return sorted(getattr(route, "methods", None) or ["GET"])


HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _template(path: str) -> re.Pattern[str]:
    """`/api/v1/leads/{lead_id}` as a pattern of the paths it stands for."""
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)))


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database failed outside a service call (e.g. while checking the caller's token):
    not the client's fault, and usually over in a moment. Logged as every database fault is,
    at most once per kind per interval (app/services/faults.py); a `DatabaseException` was
    logged where it was raised."""
    record_fault(exc, f"{request.method} {request.url.path}")
    return error_response(
        503, "The database is not available right now; please retry.", DATABASE_UNAVAILABLE
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A 500 that tells nothing of the cause, only the request id under which its traceback is
    logged (once, here). app/api/observability.py's RequestObserver calls it for any exception
    nothing else handled, so the answer gets the usual headers, X-Request-ID among them."""
    request_id = request.scope.get("state", {}).get("request_id")
    logger.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"request_id": request_id},
    )
    body = ErrorResponse(
        detail="An unexpected error occurred.",
        code="internal_error",
        **({"request_id": request_id} if request_id else {}),
    )
    return JSONResponse(body.model_dump(), status_code=500)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's ServerErrorMiddleware answers with this, outside every middleware: reached
    only when RequestObserver itself failed, so the request id header is set here."""
    response = await unexpected_error(request, exc)
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response


async def _replay(request: Request, exc: Exception) -> Response:
    """Not an error: a repeat of an Idempotency-Key gets the key's first answer again."""
    assert isinstance(exc, IdempotentReplay)
    return replayed(exc.answer)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(IdempotentReplay, _replay)
    app.add_exception_handler(CRMException, _crm_exception)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(SQLAlchemyError, _database_unavailable)
    # Refused, reset, unresolvable host, connect time-out: all OSError from the driver.
    app.add_exception_handler(OSError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
