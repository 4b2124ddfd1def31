"""Loan registration: what core banking tells the scheduler about a disbursed loan.

A registration is announced on `loan-registered` (through the scheduler's outbox, in the
same transaction) when the loan is new or its facts changed, so that other services keep
their own projection of the loan facts instead of asking the scheduler.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from services.scheduler.schemas import LoanIn
from shared.events import LoanRegistered
from shared.vocabulary import AgreedUsage, CreditGrade

# The contract's ratio has at most eight integer digits; a loan worth more than 10**8 times
# its car has no meaningful loan-to-value, and is announced without one.
_LTV_BOUND = Decimal(10) ** 8
_LTV_PLACES = Decimal("0.0001")


def loan_to_value(principal: Decimal, valuation: Decimal) -> Decimal | None:
    """principal / valuation to four places (rounded half up, as PostgreSQL's `round` does
    in the migration that backfilled the first events); None for a car valued at zero."""
    if valuation <= 0:
        return None
    ltv = (principal / valuation).quantize(_LTV_PLACES, rounding=ROUND_HALF_UP)
    return ltv if ltv < _LTV_BOUND else None


def loan_registered(loan_id: str, body: LoanIn) -> LoanRegistered:
    """The `loan-registered` event of a registration: loan facts only, never the borrower's
    name, national id or phone."""
    return LoanRegistered(
        loan_id=loan_id,
        region=body.region,
        credit_grade=CreditGrade(body.credit_grade),
        agreed_usage=AgreedUsage(body.agreed_usage),
        principal=body.principal,
        term_months=body.term_months,
        disbursed_on=body.disbursed_on,
        valuation=body.vehicle.valuation,
        ltv=loan_to_value(body.principal, body.vehicle.valuation),
    )
