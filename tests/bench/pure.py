"""The pure domain logic on one core: policy plans and alert rules per second."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime

from services.alerts import rules
from services.scheduler import policy
from services.scheduler.visit_policy import PolicyInForce, Tier, default_policy
from shared.events import RepaymentPosted, VisitCompleted, VisitFindings
from shared.vocabulary import AgreedUsage
from tests.bench.report import Report, Row

N = 100_000


def measure(report: Report) -> None:
    p = PolicyInForce(1, default_policy())
    tiers = list(Tier)
    started = time.perf_counter()
    for i in range(N):
        policy.next_routine_visit(
            p,
            visited_on=date(2026, 6, 1),
            tier=tiers[i % 3],
            days_past_due=i % 120,
            outcome="completed",
        )
    report.add(Row("policy plans", N / (time.perf_counter() - started), "plans/s", 50_000.0))

    posting = RepaymentPosted(
        loan_id="L",
        installment_no=1,
        due_date=date(2026, 6, 1),
        amount_due="100.00",
        amount_paid="0.00",
        status="missed",
        days_past_due=95,
        outstanding_principal="1000.00",
    )
    visit = VisitCompleted(
        loan_id="L",
        visit_id=uuid.uuid4(),
        agent_id="A",
        method="field",
        outcome="completed",
        started_at=datetime.now(UTC),
        ended_at=datetime.now(UTC),
        findings=VisitFindings(vehicle_usage="commercial", encumbrance_detected=True),
    )
    ruleset = rules.current()
    started = time.perf_counter()
    for _ in range(N // 2):
        rules.repayment_findings(posting, [], ruleset)
        rules.visit_findings(visit, AgreedUsage.PRIVATE, [], ruleset)
    report.add(Row("rules evaluations", N / (time.perf_counter() - started), "evals/s", 20_000.0))
