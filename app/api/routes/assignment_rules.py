"""/assignment-rules: who new leads go to (superusers only; issue 17)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from app.api.deps import CurrentUser, SessionDep
from app.api.errors import created_at, error_responses
from app.schemas.assignment_rule import (
    AssignmentRuleCreate,
    AssignmentRulePage,
    AssignmentRuleRead,
    AssignmentRuleUpdate,
)
from app.schemas.common import MAX_ID, SettingLimit
from app.services.assignment_rules import AssignmentRuleService, RuleView

router = APIRouter(prefix="/assignment-rules", tags=["assignment rules"])

RuleId = Annotated[int, Path(ge=1, le=MAX_ID, description="The rule's id.")]
ONE = error_responses(401, 403, 404, 422)
WRITE = error_responses(400, 401, 403, 404, 409, 413, 422)


def _read(view: RuleView) -> AssignmentRuleRead:
    rule = view.rule
    return AssignmentRuleRead(
        id=rule.id,
        name=rule.name,
        strategy=rule.strategy,
        agent_ids=rule.agent_ids,
        active_agent_ids=view.active_agent_ids,
        status=view.status,  # type: ignore[arg-type]
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


@router.post(
    "",
    summary="Make an assignment rule",
    response_model=AssignmentRuleRead,
    status_code=status.HTTP_201_CREATED,
    responses={
        **created_at("assignment rule"),
        **error_responses(400, 401, 403, 404, 409, 413, 422),
    },
)
async def create_assignment_rule(
    body: AssignmentRuleCreate,
    db: SessionDep,
    user: CurrentUser,
    request: Request,
    response: Response,
) -> AssignmentRuleRead:
    """Used by capture forms that name it, and by `POST /leads` with `assignment_rule_id`.
    404 for a user in `agent_ids` that does not exist; 409 for a name in use. Refused with 422
    although the schema alone allows it: a `fixed` rule listing more than one agent."""
    view = await AssignmentRuleService.create(db, body.model_dump(), acting_user_id=user.id)
    url = request.url_for("get_assignment_rule", rule_id=view.rule.id)
    response.headers["Location"] = str(url.path)
    return _read(view)


@router.get(
    "",
    summary="List assignment rules",
    response_model=AssignmentRulePage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 403, 422),
)
async def list_assignment_rules(
    db: SessionDep,
    user: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=MAX_ID, description="Rules to skip.")] = 0,
    limit: Annotated[
        int, Query(ge=1, description="Rules per page."), SettingLimit("page_max_limit")
    ] = 100,
) -> AssignmentRulePage:
    views, total = await AssignmentRuleService.list_rules(
        db, acting_user_id=user.id, skip=skip, limit=limit
    )
    return AssignmentRulePage(
        items=[_read(view) for view in views], total=total, skip=skip, limit=limit
    )


@router.get(
    "/{rule_id}",
    summary="Read an assignment rule",
    response_model=AssignmentRuleRead,
    status_code=status.HTTP_200_OK,
    responses=ONE,
)
async def get_assignment_rule(
    rule_id: RuleId, db: SessionDep, user: CurrentUser
) -> AssignmentRuleRead:
    """With `status` no_active_agent when none of its users is active (its leads then stay
    unassigned)."""
    return _read(await AssignmentRuleService.get(db, rule_id, acting_user_id=user.id))


@router.patch(
    "/{rule_id}",
    summary="Change an assignment rule",
    response_model=AssignmentRuleRead,
    status_code=status.HTTP_200_OK,
    responses=WRITE,
)
async def update_assignment_rule(
    rule_id: RuleId, body: AssignmentRuleUpdate, db: SessionDep, user: CurrentUser
) -> AssignmentRuleRead:
    """A new `agent_ids` or `strategy` starts round robin again from the first agent. Refused
    with 422 although the schema alone allows it: a rule left `fixed` with more than one
    agent."""
    data = body.model_dump(exclude_unset=True)
    view = await AssignmentRuleService.update(db, rule_id, data, acting_user_id=user.id)
    return _read(view)


@router.delete(
    "/{rule_id}",
    summary="Delete an assignment rule",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 409, 422),
)
async def delete_assignment_rule(rule_id: RuleId, db: SessionDep, user: CurrentUser) -> Response:
    """409 while a capture form uses it."""
    await AssignmentRuleService.delete(db, rule_id, acting_user_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
