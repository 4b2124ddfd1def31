"""REST of the resolutions that are records: repayment plans and legal cases."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from services.alerts import repository, resolutions
from services.alerts.models import LegalCase, RepaymentPlan
from services.alerts.schemas import (
    AdvanceIn,
    LegalCaseIn,
    LegalCaseOut,
    RepaymentPlanIn,
    RepaymentPlanOut,
)
from shared.app import SessionDep
from shared.auth import Principal, require_roles
from shared.errors import not_found
from shared.openapi import problems

router = APIRouter(prefix="/v1")

Reader = Annotated[Principal, Depends(require_roles(*repository.READERS))]
Operator = Annotated[Principal, Depends(require_roles("ops", "admin"))]
# The second pair of eyes on a plan: a supervisor or another ops user.
Approver = Annotated[Principal, Depends(require_roles("ops", "supervisor", "admin"))]


@router.post(
    "/repayment-plans",
    response_model=RepaymentPlanOut,
    status_code=201,
    responses=problems(404, 409),
)
async def propose_plan(
    body: RepaymentPlanIn, session: SessionDep, who: Operator
) -> RepaymentPlanOut:
    """Propose a plan that covers the loan's arrears; it waits for a second person."""
    plan = await resolutions.propose_plan(session, body, who.sub)
    return _plan_out(plan)


@router.get("/repayment-plans/{plan_id}", response_model=RepaymentPlanOut, responses=problems(404))
async def get_plan(plan_id: uuid.UUID, session: SessionDep, who: Reader) -> RepaymentPlanOut:
    plan = await repository.get_plan(session, plan_id)
    if plan is None:
        raise not_found("repayment plan")
    return _plan_out(plan)


@router.post(
    "/repayment-plans/{plan_id}/approve",
    response_model=RepaymentPlanOut,
    responses=problems(403, 404, 409),
)
async def approve_plan(plan_id: uuid.UUID, session: SessionDep, who: Approver) -> RepaymentPlanOut:
    """Approve someone else's plan: the alert is resolved with it and the plan announced
    on `repayment-plan-approved`."""
    plan = await resolutions.approve_plan(session, plan_id, who.sub)
    return _plan_out(plan)


@router.post(
    "/legal-cases", response_model=LegalCaseOut, status_code=201, responses=problems(404, 409)
)
async def refer_to_legal(body: LegalCaseIn, session: SessionDep, who: Operator) -> LegalCaseOut:
    """Refer the alert's loan to legal (stage `referred`); the alert is resolved by it."""
    return _case_out(await resolutions.refer_to_legal(session, body, who.sub))


@router.get("/legal-cases/{case_id}", response_model=LegalCaseOut, responses=problems(404))
async def get_case(case_id: uuid.UUID, session: SessionDep, who: Reader) -> LegalCaseOut:
    case = await repository.get_case(session, case_id)
    if case is None:
        raise not_found("legal case")
    return _case_out(case)


@router.post(
    "/legal-cases/{case_id}/advance", response_model=LegalCaseOut, responses=problems(404, 409)
)
async def advance(
    case_id: uuid.UUID, body: AdvanceIn, session: SessionDep, who: Operator
) -> LegalCaseOut:
    """The next stage: referred → filed → judgment → closed, in order."""
    return _case_out(await resolutions.advance(session, case_id, body, who.sub))


def _plan_out(plan: RepaymentPlan) -> RepaymentPlanOut:
    return RepaymentPlanOut.model_validate(plan, from_attributes=True)


def _case_out(case: LegalCase) -> LegalCaseOut:
    return LegalCaseOut.model_validate(case, from_attributes=True)
