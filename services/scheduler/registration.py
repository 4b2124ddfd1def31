"""Loan registration, set-based: what core banking tells the scheduler about disbursed loans.

`register_loans` serves both `PUT /v1/loans/{id}` (a batch of one) and the NDJSON import (a
chunk of lines). Whatever the batch size it costs a fixed number of statements: one read of
the digests already stored, one upsert of the loans, one insert of the first follow-up tasks,
one insert into the outbox, and a notification of the dispatcher.

Borrower PII is stored as Fernet ciphertext, which differs each time it is computed, so the
rows cannot tell whether a registration is the same as the one stored. A keyed digest of the
registration (PII included) can: the same registration again changes nothing, announces
nothing and costs no encryption. The key is derived from the PII key, so the digest column
is no oracle for guessing a borrower's national id or phone.

A new loan, or one whose registration changed, is announced on `loan-registered` through
the outbox in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler import policies, policy, replan, repository
from services.scheduler.models import Loan, VisitTask, outbox
from services.scheduler.schemas import LoanIn
from services.scheduler.visit_policy import PolicyInForce
from shared.events import LoanRegistered
from shared.outbox import enqueue_many
from shared.pii import PiiCipher
from shared.vocabulary import AgreedUsage, CreditGrade

# The contract's ratio has at most eight integer digits; a loan worth more than 10**8 times
# its car has no meaningful loan-to-value, and is announced without one.
_LTV_BOUND = Decimal(10) ** 8
_LTV_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class Registered:
    """What a batch of registrations did, loan ids by outcome."""

    created: frozenset[str]
    updated: frozenset[str]
    unchanged: frozenset[str]


def digest_key(pii_key: str) -> bytes:
    """The key of the registration digests, derived from (and never equal to) the PII key."""
    return hmac.new(pii_key.encode(), b"huifang/loan-registration-digest/v1", "sha256").digest()


def registration_digest(key: bytes, loan_id: str, body: LoanIn) -> str:
    """A keyed SHA-256 of everything registered of a loan, PII included.

    Over LoanIn's JSON (an import line's `loan_id` is not part of it): field order is the
    model's, so it is canonical for a given schema. Money is digested as it was sent
    (`80000.0` and `80000.00` differ): the worst a differently formatted file can do is
    count its loans as updated once."""
    message = loan_id.encode() + b"\n" + LoanIn.__pydantic_serializer__.to_json(body)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


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
    # Validated again although LoanIn validated every value: pydantic-core validates these
    # nine fields faster than `model_construct` sets them in Python (6 us against 17).
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


@dataclass(frozen=True)
class FirstFollowUp:
    """A new loan's first follow-up as the statements take it."""

    method: str
    due_on: date
    reason: str  # JSON


def first_follow_ups(rules: PolicyInForce, bodies: Iterable[LoanIn]) -> dict[date, FirstFollowUp]:
    """The first follow-up of each disbursement date: it depends on nothing else, and a
    portfolio file has far fewer dates than loans, so each is planned (and its reason
    encoded) once per batch."""
    plans: dict[date, FirstFollowUp] = {}
    for body in bodies:
        if body.disbursed_on not in plans:
            planned = policy.first_follow_up(rules, body.disbursed_on)
            plans[body.disbursed_on] = FirstFollowUp(
                planned.method, planned.due_on, _json(planned.reason)
            )
    return plans


# --- statements -----------------------------------------------------------------------------

# The registered columns and their PostgreSQL array types. The rows travel as one array per
# column through `unnest`: 20 bind parameters whatever the batch size (asyncpg allows 32,767).
_REGISTERED: tuple[tuple[str, str], ...] = (
    ("loan_id", "varchar"),
    ("borrower_id", "varchar"),
    ("borrower_name_enc", "varchar"),
    ("national_id_enc", "varchar"),
    ("phone_enc", "varchar"),
    ("occupation", "varchar"),
    ("monthly_income", "numeric"),
    ("vin", "varchar"),
    ("plate", "varchar"),
    ("make_model", "varchar"),
    ("valuation", "numeric"),
    ("valued_on", "date"),
    ("credit_grade", "varchar"),
    ("principal", "numeric"),
    ("term_months", "integer"),
    ("disbursed_on", "date"),
    ("region", "varchar"),
    ("agreed_usage", "varchar"),
    ("registration_digest", "varchar"),
    ("next_due_on", "date"),
)
# Columns an update of the registration rewrites: all but the key and the follow-up standing
# (a re-registered loan keeps its plan).
_REWRITTEN = [c for c, _ in _REGISTERED if c not in ("loan_id", "next_due_on")]


def _unnest(columns: Sequence[tuple[str, str]]) -> str:
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in columns)
    return f"unnest({arrays}) AS r({', '.join(name for name, _ in columns)})"


_LOANS = Loan.__table__.fullname  # type: ignore[attr-defined]
_TASKS = VisitTask.__table__.fullname  # type: ignore[attr-defined]

_STORED_DIGESTS = text(
    f"SELECT loan_id, registration_digest FROM {_LOANS}"
    " WHERE loan_id = ANY(CAST(:loan_ids AS varchar[]))"
)

# xmax = 0 on the returned row: it was inserted, not updated. A registration whose digest is
# the one stored is skipped by the WHERE and not returned at all.
_UPSERT = text(
    f"INSERT INTO {_LOANS} AS loans"
    f" ({', '.join(c for c, _ in _REGISTERED)}, days_past_due, created_at, updated_at)"
    f" SELECT r.*, 0, now(), now() FROM {_unnest(_REGISTERED)}"
    " ON CONFLICT (loan_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _REWRITTEN)
    + ", updated_at = excluded.updated_at"
    " WHERE loans.registration_digest IS DISTINCT FROM excluded.registration_digest"
    " RETURNING loans.loan_id, (loans.xmax = 0) AS created"
)

_TASK_COLUMNS = (("loan_id", "varchar"), ("method", "varchar"), ("due_on", "date"))
# New tasks are unassigned: the dispatcher gives them their agents. A loan that somehow
# has an open task of that method already keeps it (the open-task index).
_FIRST_TASKS = text(
    f"INSERT INTO {_TASKS}"
    " (task_id, loan_id, region, method, due_on, status, reason, created_at)"
    " SELECT gen_random_uuid(), r.loan_id, l.region, r.method, r.due_on, 'open',"
    " r.reason::jsonb, now()"
    f" FROM {_unnest([*_TASK_COLUMNS, ('reason', 'text')])}"
    f" JOIN {_LOANS} AS l USING (loan_id)"
    " ON CONFLICT (loan_id, method) WHERE status = 'open' DO NOTHING"
)


async def register_loans(
    session: AsyncSession,
    cipher: PiiCipher,
    key: bytes,
    loans: Sequence[tuple[str, LoanIn]],
) -> Registered:
    """Register (insert or update) `loans` in the caller's transaction.

    The loan ids must be distinct: one statement cannot write a row twice. New loans get
    their first follow-up task, unassigned; new and changed loans are announced."""
    if not loans:
        return Registered(frozenset(), frozenset(), frozenset())
    ordered = sorted(loans, key=lambda item: item[0])  # one lock order: no deadlocks
    ids = [loan_id for loan_id, _ in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("a batch of registrations names a loan twice")
    digests = [registration_digest(key, loan_id, body) for loan_id, body in ordered]
    found = await session.execute(_STORED_DIGESTS, {"loan_ids": ids})
    stored: dict[str, str | None] = {loan_id: digest for loan_id, digest in found}
    # Only registrations that differ from the stored one are encrypted and written.
    fresh = [
        (loan_id, body, digest)
        for (loan_id, body), digest in zip(ordered, digests, strict=True)
        if stored.get(loan_id) != digest
    ]
    written: dict[str, bool] = {}
    plans: dict[date, FirstFollowUp] = {}
    # The visit policy in force plans the first follow-up and gives the tier.
    rules = await policies.current_policy(session) if fresh else None
    if rules is not None:
        plans = first_follow_ups(rules, (body for _, body, _ in fresh))
        result = await session.execute(_UPSERT, _loan_columns(cipher, fresh, plans))
        written = {loan_id: created for loan_id, created in result}
    created = frozenset(loan_id for loan_id, was_created in written.items() if was_created)
    updated = frozenset(written) - created
    bodies = dict(ordered)
    if created:
        await _plan_first_follow_ups(
            session, [(loan_id, plans[bodies[loan_id].disbursed_on]) for loan_id in created]
        )
    # A loan that changed region takes its open tasks along.
    await repository.move_tasks(session, updated)
    if written and rules is not None:
        # A registration's facts (grade, amounts, term) are the tier's inputs.
        await replan.recompute_tiers(session, rules, datetime.now(UTC).date(), written)
        events = [loan_registered(loan_id, bodies[loan_id]) for loan_id in sorted(written)]
        await enqueue_many(session, outbox, events)
    return Registered(created, updated, frozenset(ids) - created - updated)


def _loan_columns(
    cipher: PiiCipher,
    fresh: Sequence[tuple[str, LoanIn, str]],
    plans: Mapping[date, FirstFollowUp],
) -> dict[str, Sequence[object]]:
    """The rows of the upsert, one list per column (the names of `_REGISTERED`)."""
    bodies = [body for _, body, _ in fresh]
    borrowers = [body.borrower for body in bodies]
    vehicles = [body.vehicle for body in bodies]
    # The batch's PII in one call: encrypting many at once costs a third of one by one.
    sealed = cipher.encrypt_many(
        [b.name for b in borrowers]
        + [b.national_id for b in borrowers]
        + [b.phone for b in borrowers]
    )
    n = len(fresh)
    return {
        "loan_id": [loan_id for loan_id, _, _ in fresh],
        "borrower_id": [b.borrower_id for b in borrowers],
        "borrower_name_enc": sealed[:n],
        "national_id_enc": sealed[n : 2 * n],
        "phone_enc": sealed[2 * n :],
        "occupation": [b.occupation for b in borrowers],
        "monthly_income": [b.monthly_income for b in borrowers],
        "vin": [v.vin for v in vehicles],
        "plate": [v.plate for v in vehicles],
        "make_model": [v.make_model for v in vehicles],
        "valuation": [v.valuation for v in vehicles],
        "valued_on": [v.valued_on for v in vehicles],
        "credit_grade": [body.credit_grade for body in bodies],
        "principal": [body.principal for body in bodies],
        "term_months": [body.term_months for body in bodies],
        "disbursed_on": [body.disbursed_on for body in bodies],
        "region": [body.region for body in bodies],
        "agreed_usage": [body.agreed_usage for body in bodies],
        "registration_digest": [digest for _, _, digest in fresh],
        "next_due_on": [plans[body.disbursed_on].due_on for body in bodies],
    }


async def _plan_first_follow_ups(
    session: AsyncSession, loans: Sequence[tuple[str, FirstFollowUp]]
) -> None:
    """Each new loan's first follow-up (its `next_due_on` was written with the loan)."""
    rows: dict[str, list[object]] = {"loan_id": [], "method": [], "due_on": [], "reason": []}
    for loan_id, planned in sorted(loans, key=lambda item: item[0]):
        rows["loan_id"].append(loan_id)
        rows["method"].append(planned.method)
        rows["due_on"].append(planned.due_on)
        rows["reason"].append(planned.reason)
    await session.execute(_FIRST_TASKS, rows)
    await repository.notify_dispatch(session)


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
