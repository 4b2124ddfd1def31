"""Vehicle valuations in bulk (`POST /v1/valuations`, NDJSON), streamed like the loan import.

Each chunk of valid lines is one transaction of a fixed number of statements: one `UPDATE`
of the loans' valuation (only a newer valuation replaces the stored one) returning the
LTV before and after, the collateral reviews of the loans whose LTV reached the policy's
limit written as plans (`planning.apply`: tasks, standing, tiers), and one outbox insert of
`loan-registered` for every loan whose facts changed, so the alerts service's copy of the
loan follows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import planning, policies, policy
from services.scheduler.models import outbox
from services.scheduler.policy import LoanPlan, Record
from services.scheduler.registration import loan_to_value
from services.scheduler.repository import Standing
from services.scheduler.schemas import LISTED_REJECTIONS, RejectedLine
from shared.db import unit_of_work
from shared.events import LoanRegistered
from shared.outbox import enqueue_many
from shared.validation import BusinessDate, LoanId, Money
from shared.vocabulary import AgreedUsage, CreditGrade

CHUNK_LINES = 2000


class ValuationLine(BaseModel):
    """One line of the body: a vehicle's new price."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"loan_id": "L-1", "valuation": "72000.00", "valued_on": "2027-01-10"}]
        },
    )

    loan_id: LoanId
    valuation: Money = Field(gt=0)
    valued_on: BusinessDate


class ValuationResult(BaseModel):
    accepted: int = Field(description="Valid lines of registered loans.")
    updated: int = Field(description="Loans whose valuation changed (an older one is ignored).")
    reviews: int = Field(description="Loans whose LTV reached the policy's limit: reviewed.")
    rejected: int
    rejected_lines: list[RejectedLine] = Field(max_length=LISTED_REJECTIONS)


@dataclass
class Tally:
    accepted: int = 0
    updated: int = 0
    reviews: int = 0
    rejected: int = 0
    rejected_lines: list[RejectedLine] = field(default_factory=list)

    def reject(self, line: RejectedLine) -> None:
        self.rejected += 1
        if len(self.rejected_lines) < LISTED_REJECTIONS:
            self.rejected_lines.append(line)

    def result(self) -> ValuationResult:
        return ValuationResult(
            accepted=self.accepted,
            updated=self.updated,
            reviews=self.reviews,
            rejected=self.rejected,
            rejected_lines=self.rejected_lines,
        )


def parse(number: int, raw: bytes | None) -> ValuationLine | RejectedLine:
    if raw is None:
        return RejectedLine(line=number, field=None, reason="line too long")
    try:
        return ValuationLine.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        return RejectedLine(line=number, field=where, reason=first["msg"])


# The stored row before and after, in one statement: `c` is the row as it was.
_REVALUE = text(
    """
    UPDATE scheduler.loans AS l SET valuation = v.valuation, valued_on = v.valued_on,
                                    updated_at = now()
    FROM unnest(CAST(:loan_ids AS varchar[]), CAST(:valuations AS numeric[]),
                CAST(:valued AS date[])) AS v(loan_id, valuation, valued_on)
    JOIN scheduler.loans AS c ON c.loan_id = v.loan_id
    WHERE l.loan_id = v.loan_id AND v.valued_on >= c.valued_on
      AND v.valuation IS DISTINCT FROM c.valuation
    RETURNING l.loan_id, c.valuation AS old_valuation, l.valuation, l.principal, l.region,
              l.credit_grade, l.agreed_usage, l.term_months, l.disbursed_on, l.tier_shift,
              l.on_time_streak, l.last_visit_clean
    """
)


async def revalue(session: AsyncSession, lines: Sequence[tuple[int, ValuationLine]]) -> Tally:
    """Apply a chunk of valuations in the caller's transaction: of a loan's lines the newest
    valuation counts (the later line of the same day)."""
    latest: dict[str, tuple[int, ValuationLine]] = {}
    for n, line in lines:
        kept = latest.get(line.loan_id)
        if kept is None or (line.valued_on, n) >= (kept[1].valued_on, kept[0]):
            latest[line.loan_id] = (n, line)
    known = {
        r.loan_id
        for r in await session.execute(
            text(
                "SELECT loan_id FROM scheduler.loans WHERE loan_id = ANY(CAST(:ids AS varchar[]))"
            ),
            {"ids": sorted(latest)},
        )
    }
    tally = Tally()
    for loan_id, (number, _) in sorted(latest.items(), key=lambda item: item[1][0]):
        if loan_id not in known:
            tally.reject(
                RejectedLine(line=number, field="loan_id", reason="loan is not registered")
            )
    rows = [line for loan_id, (_, line) in sorted(latest.items()) if loan_id in known]
    tally.accepted = len(rows)
    if not rows:
        return tally
    p = await policies.current_policy(session)
    changed = (
        await session.execute(
            _REVALUE,
            {
                "loan_ids": [r.loan_id for r in rows],
                "valuations": [r.valuation for r in rows],
                "valued": [r.valued_on for r in rows],
            },
        )
    ).all()
    tally.updated = len(changed)
    today = datetime.now(UTC).date()
    plans: list[LoanPlan] = []
    standings: list[Standing] = []
    for row in changed:
        before = loan_to_value(row.principal, row.old_valuation)
        after = loan_to_value(row.principal, row.valuation)
        crossed = policy.over_ltv_limit(p, after) and not policy.over_ltv_limit(p, before)
        if crossed:
            plans.append(
                LoanPlan(row.loan_id, policy.collateral_review(p, valued_on=today, ltv=after), None)
            )
            record = Record(row.on_time_streak, row.last_visit_clean, row.tier_shift)
            up = policy.shifted(record.tier_shift, p.rules.collateral.tiers_up)
            standings.append(Standing(row.loan_id, tier_shift=up, on_time_streak=0))
        else:
            # Its LTV is an input of its tier all the same.
            standings.append(Standing(row.loan_id))
    tally.reviews = len(plans)
    await planning.apply(session, p, planning.BatchPlan(plans, standings, []))
    events = [
        LoanRegistered(
            loan_id=row.loan_id,
            region=row.region,
            credit_grade=CreditGrade(row.credit_grade),
            agreed_usage=AgreedUsage(row.agreed_usage),
            principal=row.principal,
            term_months=row.term_months,
            disbursed_on=row.disbursed_on,
            valuation=row.valuation,
            ltv=loan_to_value(row.principal, row.valuation),
        )
        for row in changed
    ]
    await enqueue_many(session, outbox, events)
    return tally


async def import_valuations(
    sessions: async_sessionmaker[AsyncSession], lines: AsyncIterator[tuple[int, bytes | None]]
) -> ValuationResult:
    """Read the numbered lines as they stream in; a chunk of valid ones per transaction."""
    total = Tally()
    chunk: list[tuple[int, ValuationLine]] = []

    async def flush() -> None:
        async with unit_of_work(sessions) as session:
            done = await revalue(session, chunk)
        total.accepted += done.accepted
        total.updated += done.updated
        total.reviews += done.reviews
        for rejected in done.rejected_lines:
            total.reject(rejected)
        chunk.clear()

    async for number, raw in lines:
        if raw is not None and not raw.strip():
            continue
        parsed = parse(number, raw)
        if isinstance(parsed, RejectedLine):
            total.reject(parsed)
            continue
        chunk.append((number, parsed))
        if len(chunk) >= CHUNK_LINES:
            await flush()
    if chunk:
        await flush()
    total.rejected_lines.sort(key=lambda r: r.line)
    return total.result()
