"""Scheduler use cases. They run inside the caller's transaction and never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler import policy, repository
from services.scheduler.models import Agent, Loan, VisitTask
from services.scheduler.schemas import (
    AgentIn,
    BorrowerOut,
    LoanOut,
    RescheduleIn,
    VehicleOut,
)
from shared.auth import Principal
from shared.errors import Problem, not_found
from shared.events import AlertRaised, EventEnvelope, RepaymentPosted, VisitCompleted
from shared.kafka import InvalidEvents
from shared.pii import PiiCipher, mask_name, mask_tail


async def plan_visit(
    session: AsyncSession,
    loan: Loan,
    planned: policy.PlannedVisit,
    source_event_id: uuid.UUID | None,
) -> VisitTask:
    """Create a task for a planned visit, or bring the loan's open one forward."""
    existing = await repository.open_task(session, loan.loan_id, planned.method)
    decision = policy.merge_with_open_task(existing.due_on if existing else None, planned)
    if existing is not None:
        if decision == "advance":
            existing.due_on = planned.due_on
            existing.reason = planned.reason
            existing.source_event_id = source_event_id
        else:
            # The open task already comes sooner; the agent should still know why else to go.
            also = [*existing.reason.get("also", []), planned.reason]
            existing.reason = {**existing.reason, "also": also}
        return existing
    loads = await repository.agent_loads(session, loan.region, planned.method, planned.due_on)
    task = VisitTask(
        loan_id=loan.loan_id,
        method=planned.method,
        due_on=planned.due_on,
        agent_id=policy.choose_agent(loads),
        reason=planned.reason,
        source_event_id=source_event_id,
    )
    session.add(task)
    await session.flush()
    return task


async def upsert_agent(session: AsyncSession, agent_id: str, body: AgentIn) -> Agent:
    agent = await repository.get_agent(session, agent_id)
    if agent is None:
        agent = Agent(agent_id=agent_id, **body.model_dump())
        session.add(agent)
    else:
        for key, value in body.model_dump().items():
            setattr(agent, key, value)
        agent.updated_at = datetime.now(UTC)
    await session.flush()
    return agent


async def reschedule_task(
    session: AsyncSession, task_id: uuid.UUID, body: RescheduleIn, who: Principal
) -> VisitTask:
    """Move an open task to `body.due_on`, and to `body.agent_id` if given.

    A supervisor acts only on its own region's loans: a task of another region's loan looks
    absent (404), so that nobody hands another region's work, and with it the right to record
    visits on its loans, to an agent of theirs. Whoever asks, the new agent must work in the
    loan's region.
    """
    if who.role == "supervisor" and who.region is None:
        raise Problem(403, "Forbidden", "a supervisor's token must name the region it oversees")
    found = await repository.get_task_and_region(session, task_id, for_update=True)
    if found is None:
        raise not_found("task")
    task, region = found
    if who.role == "supervisor" and region != who.region:
        raise not_found("task")
    if task.status != "open":
        raise Problem(409, "Conflict", f"task is {task.status}; only open tasks can be rescheduled")
    if body.agent_id is not None:
        agent = await repository.get_agent(session, body.agent_id)
        if (
            agent is None
            or not agent.active
            or agent.region != region
            or task.method not in agent.methods
        ):
            raise Problem(
                422,
                "Unprocessable Content",
                "agent cannot take this task",
                errors=[
                    {
                        "field": "body.agent_id",
                        "message": "unknown, inactive, of another region or wrong method",
                    }
                ],
            )
        task.agent_id = body.agent_id
    task.reason = {**task.reason, "rescheduled_from": task.due_on.isoformat(), "note": body.note}
    task.due_on = body.due_on
    return task


# --- event handlers -----------------------------------------------------------------------


async def _registered_loan(session: AsyncSession, event: EventEnvelope) -> Loan:
    loan = await repository.get_loan(session, event.loan_id, for_update=True)
    if loan is None:
        # Replayable from the DLQ once origination has registered the loan.
        reason = f"loan {event.loan_id} is not registered with the scheduler"
        raise InvalidEvents({event.event_id: reason})
    return loan


async def on_repayments(session: AsyncSession, events: Sequence[RepaymentPosted]) -> None:
    for event in events:
        await on_repayment_posted(session, event)


async def on_visits(session: AsyncSession, events: Sequence[VisitCompleted]) -> None:
    for event in events:
        await on_visit_completed(session, event)


async def on_alerts(session: AsyncSession, events: Sequence[AlertRaised]) -> None:
    for event in events:
        await on_alert_raised(session, event)


async def on_repayment_posted(session: AsyncSession, event: RepaymentPosted) -> None:
    """Record the repayment standing; a missed or partial installment gets urgent visits."""
    loan = await _registered_loan(session, event)
    loan.days_past_due = event.days_past_due
    loan.last_repayment_status = event.status
    loan.updated_at = datetime.now(UTC)
    for planned in policy.visits_for_repayment(
        posted_on=event.occurred_at.date(),
        status=event.status,
        days_past_due=event.days_past_due,
        installment_no=event.installment_no,
    ):
        await plan_visit(session, loan, planned, event.event_id)


async def on_visit_completed(session: AsyncSession, event: VisitCompleted) -> None:
    """Complete the visited task and plan the next visit by risk."""
    loan = await _registered_loan(session, event)
    if event.task_id is not None:
        task = await repository.get_task(session, event.task_id, for_update=True)
        if task is not None and task.loan_id == loan.loan_id and task.status == "open":
            task.status = "completed"
            task.visit_id = event.visit_id
            task.completed_at = event.ended_at
            await session.flush()
    planned = policy.next_routine_visit(
        visited_on=event.ended_at.date(),
        credit_grade=loan.credit_grade,
        days_past_due=loan.days_past_due,
        outcome=event.outcome,
    )
    await plan_visit(session, loan, planned, event.event_id)


async def on_alert_raised(session: AsyncSession, event: AlertRaised) -> None:
    """Alerts that recommend a visit put one on the plan."""
    planned = policy.visit_for_alert(
        raised_on=event.occurred_at.date(),
        recommended_action=event.recommended_action,
        rule=event.rule,
        severity=event.severity,
    )
    if planned is None:
        return
    loan = await _registered_loan(session, event)
    await plan_visit(session, loan, planned, event.event_id)


# --- views --------------------------------------------------------------------------------


def loan_view(loan: Loan, cipher: PiiCipher) -> LoanOut:
    """The loan as the API shows it: name, national id and phone masked."""
    ltv = (loan.principal / loan.valuation).quantize(Decimal("0.0001")) if loan.valuation else None
    return LoanOut(
        loan_id=loan.loan_id,
        borrower=BorrowerOut(
            borrower_id=loan.borrower_id,
            name=mask_name(cipher.decrypt(loan.borrower_name_enc)),
            national_id=mask_tail(cipher.decrypt(loan.national_id_enc)),
            phone=mask_tail(cipher.decrypt(loan.phone_enc)),
            occupation=loan.occupation,
            monthly_income=loan.monthly_income,
        ),
        vehicle=VehicleOut(
            vin=loan.vin,
            plate=loan.plate,
            make_model=loan.make_model,
            valuation=loan.valuation,
            valued_on=loan.valued_on,
            ltv=ltv,
        ),
        credit_grade=loan.credit_grade,
        principal=loan.principal,
        term_months=loan.term_months,
        disbursed_on=loan.disbursed_on,
        region=loan.region,
        agreed_usage=loan.agreed_usage,
        days_past_due=loan.days_past_due,
        last_repayment_status=loan.last_repayment_status,
    )
