"""Scheduler use cases. They run inside the caller's transaction and never commit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler import repository
from services.scheduler.models import Agent, Loan, VisitTask
from services.scheduler.schemas import (
    AbsencesIn,
    AgentIn,
    BorrowerOut,
    LoanOut,
    RescheduleIn,
    VehicleOut,
)
from shared.auth import Principal
from shared.errors import Problem, not_found
from shared.pii import PiiCipher, mask_name, mask_tail


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
    # A departed (inactive) agent's open tasks, and those due on days it no longer works,
    # go back to dispatch.
    await repository.release_tasks(session, [agent_id])
    if agent.active:
        # Tasks of its region that had nobody able to do them can now be dispatched.
        await repository.notify_dispatch(session)
    return agent


async def replace_absences(session: AsyncSession, agent_id: str, body: AbsencesIn) -> int:
    """The agent's absences become `body`'s; its open tasks due while away go back to
    dispatch. How many were released."""
    agent = await repository.get_agent(session, agent_id)
    if agent is None:
        raise not_found("agent")
    await repository.replace_absences(
        session, agent_id, [(a.starts_on, a.ends_on) for a in body.absences]
    )
    return await repository.release_tasks(session, [agent_id])


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
        task.assigned_at = datetime.now(UTC)
    task.reason = {**task.reason, "rescheduled_from": task.due_on.isoformat(), "note": body.note}
    task.due_on = body.due_on
    await session.flush()
    # The loan's soonest due date may have moved with the task.
    await repository.update_standing(session, [repository.Standing(task.loan_id)])
    return task


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
