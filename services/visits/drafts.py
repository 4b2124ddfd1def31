"""Drafts: a visit begun on the device and not yet submitted (offline-first capture).

A draft is its agent's alone (to anyone else it does not exist), kept as the app sent it,
checked for shape only: the capture rules, the chain and `visit-completed` wait for
submission. Its id is the device's and becomes the visit's, so a submission sent twice
(or a capture sent with the same `visit_id`) is one visit. The worker purges drafts left
untouched `DRAFT_RETENTION_DAYS` (retention.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.visits import repository, service
from services.visits.models import Visit, VisitDraft
from services.visits.schemas import DraftIn, DraftOut, VisitIn
from shared.db import utcnow
from shared.errors import Problem, not_found


async def save(
    session: AsyncSession, agent_id: str, visit_id: uuid.UUID, body: DraftIn
) -> VisitDraft:
    """Create the draft under the device's id, or replace the agent's own."""
    if await repository.get_by_id(session, visit_id) is not None:
        raise Problem(409, "Conflict", "this visit was already submitted; it is immutable")
    now = utcnow()
    draft = VisitDraft(
        visit_id=visit_id,
        agent_id=agent_id,
        loan_id=body.loan_id,
        body=body.model_dump(mode="json", exclude_unset=True),
        created_at=now,
        updated_at=now,
    )
    saved = await repository.save_draft(session, draft)
    if saved is None:
        # Another agent's draft under this id: it does not exist for this caller.
        raise not_found("draft")
    return saved


def draft_view(draft: VisitDraft) -> DraftOut:
    return DraftOut.model_validate(
        {
            **draft.body,
            "visit_id": draft.visit_id,
            "created_at": draft.created_at,
            "updated_at": draft.updated_at,
        }
    )


async def submitted_already(
    session: AsyncSession, agent_id: str, visit_id: uuid.UUID
) -> Visit | None:
    """The visit this id already became, if it is the agent's: a repeated submission."""
    visit = await repository.get_by_id(session, visit_id)
    if visit is not None and visit.agent_id != agent_id:
        raise not_found("draft")
    return visit


async def as_capture(session: AsyncSession, agent_id: str, visit_id: uuid.UUID) -> VisitIn:
    """The agent's draft as a complete capture, or a 422 naming each field missing or
    wrong; the capture rules are checked too (404 for no such draft of the agent's)."""
    draft = await repository.get_draft(session, agent_id, visit_id)
    if draft is None:
        raise not_found("draft")
    try:
        capture = VisitIn.model_validate({**draft.body, "visit_id": visit_id})
    except ValidationError as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            "the draft is not a complete visit yet",
            errors=[_error(error) for error in exc.errors()],
        ) from None
    service.check_capture_rules(capture)
    return capture


def _error(error: Any) -> dict[str, str]:
    location = ".".join(str(part) for part in error["loc"])
    return {"field": f"body.{location}", "message": str(error["msg"])}
