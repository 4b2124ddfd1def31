"""Partners' reports (GPS/telematics platforms, ride-hailing registries, credit bureaus):
each becomes a `third_party` visit, recorded, chained and announced like an agent's. Use
cases; they run inside the caller's transaction and never commit. What a report means in
the four key items is `services.visits.third_party` (pure)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from services.visits import repository, service, third_party
from services.visits.models import ThirdPartyReport, Visit
from services.visits.schemas import (
    ReportDetails,
    ThirdPartyReportIn,
    ThirdPartyReportOut,
    VisitIn,
)
from shared.auth import Principal
from shared.errors import Problem, not_found
from shared.service_client import OwnerUnavailable, ServiceClient

log = logging.getLogger(__name__)

_REPORT_REUSED = "this report_id was already used for a different report"


def authorize_report(who: Principal, body: ThirdPartyReportIn) -> None:
    """A partner reports under its own name only: one partner cannot speak for another."""
    if body.partner != who.sub:
        raise Problem(
            403,
            "Forbidden",
            "partner must be the reporting token's subject",
            errors=[{"field": "body.partner", "message": "must equal the token's subject"}],
        )


async def earlier_report(
    session: AsyncSession, body: ThirdPartyReportIn
) -> ThirdPartyReportOut | None:
    """The report this (partner, report_id) already recorded, or None; another body under
    the same id is a 409."""
    earlier = await repository.get_by_idempotency_key(session, body.partner, body.report_id)
    if earlier is None:
        return None
    return await _report_of(session, service.replay(earlier, body.request_hash(), _REPORT_REUSED))


async def confirm_loan(scheduler: ServiceClient, loan_id: str) -> str:
    """The loan's region; a report on a loan the scheduler does not know is a 404 (asked
    with no transaction open); the scheduler down is a 503 the partner retries."""
    try:
        loan = await service.registered_loan(scheduler, loan_id)
    except OwnerUnavailable as exc:
        raise service.scheduler_unavailable(loan_id, exc) from exc
    region = loan.get("region") if loan is not None else None
    if not isinstance(region, str):
        raise not_found("loan")
    return region


def report_as_visit(body: ThirdPartyReportIn) -> VisitIn:
    """The visit a report becomes: method `third_party`, at the moment observed."""
    position = body.details.position
    return VisitIn.model_validate(
        {
            "task_id": None,
            "loan_id": body.loan_id,
            "method": "third_party",
            "outcome": "completed",
            "started_at": body.observed_at,
            "ended_at": body.observed_at,
            "findings": third_party.findings_of(body.kind).model_dump(),
            "geo": position.model_dump() if position else None,
        }
    )


async def record_report(
    session: AsyncSession, body: ThirdPartyReportIn, region: str
) -> tuple[ThirdPartyReportOut, bool]:
    """Record the report and its visit (chained, `visit-completed` staged; `region` is the
    loan's) in the caller's transaction; a concurrent resend that committed first is
    returned instead."""
    recorded = await service.record_visit(
        session,
        agent_id=body.partner,
        idempotency_key=body.report_id,
        body=report_as_visit(body),
        region=region,
        request_hash=body.request_hash(),
    )
    visit = recorded.visit
    if not recorded.created:
        return await _report_of(session, visit), False
    report = ThirdPartyReport(
        visit_id=visit.visit_id,
        partner=body.partner,
        report_id=body.report_id,
        kind=body.kind,
        loan_id=body.loan_id,
        observed_at=body.observed_at,
        details=body.details.model_dump(mode="json", exclude_none=True),
    )
    await repository.add_report(session, report)
    log.info(
        "report %s of kind %s on loan %s became visit %s",
        report.report_id,
        report.kind,
        report.loan_id,
        visit.visit_id,
    )
    return report_view(report, visit), True


async def _report_of(session: AsyncSession, visit: Visit) -> ThirdPartyReportOut:
    report = await repository.get_report(session, visit.visit_id)
    if report is None:
        # The (agent_id, idempotency_key) pair is an agent's capture, not a report.
        raise Problem(409, "Conflict", _REPORT_REUSED)
    return report_view(report, visit)


def report_view(report: ThirdPartyReport, visit: Visit) -> ThirdPartyReportOut:
    return ThirdPartyReportOut(
        report_id=report.report_id,
        partner=report.partner,
        kind=report.kind,
        loan_id=report.loan_id,
        observed_at=report.observed_at,
        details=ReportDetails.model_validate(report.details),
        received_at=report.received_at,
        visit=service.visit_view(visit),
    )
