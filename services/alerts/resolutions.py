"""Resolutions as records of their own: a repayment plan (four eyes: the proposer cannot
approve it) and a legal case advanced stage by stage. They run inside the caller's
transaction and never commit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts import repository, service
from services.alerts.models import (
    Alert,
    LegalCase,
    LegalStage,
    PlanStatus,
    RepaymentPlan,
    ResolutionAction,
    outbox,
)
from services.alerts.schemas import AdvanceIn, LegalCaseIn, RepaymentPlanIn
from shared.errors import Problem, not_found
from shared.events import PlanInstallment, RepaymentPlanApproved
from shared.outbox import enqueue_many
from shared.vocabulary import AlertStatus

# The order a legal case takes its stages, one at a time.
LEGAL_ORDER: tuple[LegalStage, ...] = tuple(LegalStage)


def next_stage(stage: LegalStage) -> LegalStage | None:
    at = LEGAL_ORDER.index(stage)
    return LEGAL_ORDER[at + 1] if at + 1 < len(LEGAL_ORDER) else None


def covers(total: Decimal, arrears: Decimal) -> bool:
    return total >= arrears


async def _taken_alert(session: AsyncSession, alert_id: uuid.UUID) -> Alert:
    """The alert a resolution is for, locked: someone must have taken it (acknowledged or
    in progress); an open one is acknowledged first, a closed one is closed."""
    alert = await service.get_alert(session, alert_id, for_update=True)
    if alert.status not in (AlertStatus.ACKNOWLEDGED, AlertStatus.IN_PROGRESS):
        raise Problem(
            409,
            "Conflict",
            f"alert is {alert.status}; a resolution is for an acknowledged or in-progress alert",
        )
    return alert


# --- repayment plans ----------------------------------------------------------------------


async def propose_plan(session: AsyncSession, body: RepaymentPlanIn, who: str) -> RepaymentPlan:
    """A plan that must pay at least the loan's arrears (from its postings); the alert is
    in progress while the plan waits for its approval."""
    alert = await _taken_alert(session, body.alert_id)
    if await repository.proposed_plan_of(session, alert.alert_id) is not None:
        raise Problem(409, "Conflict", "a plan for this alert is already waiting for approval")
    arrears = await repository.arrears_of(session, alert.loan_id)
    total = sum((i.amount for i in body.installments), Decimal("0.00"))
    if not covers(total, arrears):
        raise Problem(
            422,
            "Unprocessable Content",
            f"the plan pays {total} CNY; the loan's arrears are {arrears} CNY",
            errors=[{"field": "body.installments", "message": f"must add up to {arrears} CNY"}],
        )
    now = datetime.now(UTC)
    plan = RepaymentPlan(
        alert_id=alert.alert_id,
        loan_id=alert.loan_id,
        status=PlanStatus.PROPOSED,
        arrears=arrears,
        total=total,
        installments=[i.model_dump(mode="json") for i in body.installments],
        note=body.note,
        proposed_by=who,
        proposed_at=now,
    )
    session.add(plan)
    if alert.status == AlertStatus.ACKNOWLEDGED:
        note = f"repayment plan {plan.plan_id} proposed: {total} CNY for {arrears} CNY arrears"
        await service.transition(session, alert, AlertStatus.IN_PROGRESS, who, note)
    return plan


async def approve_plan(session: AsyncSession, plan_id: uuid.UUID, who: str) -> RepaymentPlan:
    """The second pair of eyes: resolves the alert with the plan and announces the plan."""
    plan = await repository.get_plan(session, plan_id, for_update=True)
    if plan is None:
        raise not_found("repayment plan")
    if plan.status != PlanStatus.PROPOSED:
        raise Problem(409, "Conflict", f"plan is already {plan.status}")
    if plan.proposed_by == who:
        raise Problem(403, "Forbidden", "a plan is approved by someone other than its proposer")
    alert = await _taken_alert(session, plan.alert_id)
    now = datetime.now(UTC)
    plan.status = PlanStatus.APPROVED
    plan.approved_by = who
    plan.approved_at = now
    note = (
        f"repayment plan {plan.plan_id} approved: {len(plan.installments)} installments, "
        f"{plan.total} CNY"
    )
    await service.transition(session, alert, AlertStatus.RESOLVED, who, note)
    alert.resolved_at = now
    alert.resolved_by = who
    alert.resolution_action = ResolutionAction.REPAYMENT_PLAN
    alert.resolution_note = note
    event = RepaymentPlanApproved(
        loan_id=plan.loan_id,
        plan_id=plan.plan_id,
        alert_id=plan.alert_id,
        arrears=plan.arrears,
        total=plan.total,
        installments=[PlanInstallment.model_validate(i) for i in plan.installments],
    )
    await enqueue_many(session, outbox, [event])
    return plan


# --- legal cases --------------------------------------------------------------------------


async def refer_to_legal(session: AsyncSession, body: LegalCaseIn, who: str) -> LegalCase:
    """Open the loan's legal case from the alert, which the referral resolves."""
    alert = await _taken_alert(session, body.alert_id)
    if await repository.case_of(session, alert.alert_id) is not None:
        raise Problem(409, "Conflict", "this alert is already referred to legal")
    now = datetime.now(UTC)
    case = LegalCase(
        alert_id=alert.alert_id,
        loan_id=alert.loan_id,
        stage=LegalStage.REFERRED,
        stages=[_step(LegalStage.REFERRED, now, who, body.note)],
        opened_by=who,
        opened_at=now,
        updated_at=now,
    )
    session.add(case)
    note = f"referred to legal: case {case.case_id}" + (f": {body.note}" if body.note else "")
    await service.transition(session, alert, AlertStatus.RESOLVED, who, note)
    alert.resolved_at = now
    alert.resolved_by = who
    alert.resolution_action = ResolutionAction.LEGAL_REVIEW
    alert.resolution_note = note
    return case


async def advance(
    session: AsyncSession, case_id: uuid.UUID, body: AdvanceIn, who: str
) -> LegalCase:
    """The case's next stage, and only that one."""
    case = await repository.get_case(session, case_id, for_update=True)
    if case is None:
        raise not_found("legal case")
    expected = next_stage(LegalStage(case.stage))
    if body.to != expected:
        then = f"its next stage is {expected}" if expected else "it is closed"
        raise Problem(409, "Conflict", f"case is {case.stage}; {then}")
    now = datetime.now(UTC)
    case.stage = body.to
    case.stages = [*case.stages, _step(body.to, now, who, body.note)]
    case.updated_at = now
    return case


def _step(stage: LegalStage, at: datetime, who: str, note: str | None) -> dict[str, str | None]:
    return {"stage": str(stage), "at": at.isoformat(), "who": who, "note": note}
