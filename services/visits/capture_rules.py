"""What a visit may claim, by how it was made and how it ended (issue 7, capture).

Pure: a validated body in, every field at fault out, so the agent's app can show all of
them at once rather than one per retry. The body's own shape (types, ranges, times ordered
and not in the future) is checked earlier, by `schemas.VisitIn`.

- A field inspection must place itself (`geo`) and say whether the car was there
  (`vehicle_sighted`, true or false): that is what a field visit is for.
- A completed field inspection shows the car: it references at least one photo uploaded
  first (`evidence`; that one of them is a photo, and the agent's own, is checked against
  the stored evidence when the visit is recorded). A visit that did not happen need not.
  Partners' reports are not captures and are exempt.
- A phone call cannot see the car.
- When the borrower could not be reached, nothing the borrower would have to show or tell
  can be claimed (identity, job, income, documents, difficulty repaying). On a field visit
  the agent still sees the car, or its absence, without the borrower, so the vehicle items
  stay open there; on a phone call they must stay unset too.
- `third_party` visits come from partners through `POST /v1/third-party-reports`; an agent
  or supervisor cannot file one.
"""

from __future__ import annotations

from services.visits.schemas import FindingsIn, VisitIn
from shared.vocabulary import VisitMethod, VisitOutcome

# The defaults of the four key items: what "nothing claimed" looks like, per item.
_UNSET = FindingsIn()

# Items only the borrower can show or tell.
_FROM_THE_BORROWER = (
    "identity_verified",
    "employment_status",
    "income_change",
    "collateral_documents_intact",
    "repayment_difficulty",
)
# Items an agent learns by looking at the car (whether it was seen at all is ruled per
# method above: a phone call never sees it, a field visit always says).
_FROM_THE_CAR = ("vehicle_usage", "vehicle_condition", "encumbrance_detected")


NEEDS_A_PHOTO = "a completed field visit needs at least one photo of the car"


def needs_a_photo(body: VisitIn) -> bool:
    """A completed field visit shows the car it inspected."""
    return body.method == VisitMethod.FIELD and body.outcome == VisitOutcome.COMPLETED


def _claimed(findings: FindingsIn, item: str) -> bool:
    return bool(getattr(findings, item) != getattr(_UNSET, item))


def violations(body: VisitIn) -> list[dict[str, str]]:
    """Every rule the visit breaks, as problem+json `errors` (`body.<field>`)."""
    errors: list[dict[str, str]] = []

    def fault(field: str, message: str) -> None:
        errors.append({"field": f"body.{field}", "message": message})

    findings = body.findings
    if body.method == VisitMethod.THIRD_PARTY:
        fault("method", "third-party visits are reported through /v1/third-party-reports")
    if body.method == VisitMethod.FIELD:
        if body.geo is None:
            fault("geo", "required for a field visit")
        if findings.vehicle_sighted is None:
            fault("findings.vehicle_sighted", "a field visit must say whether the car was seen")
        if needs_a_photo(body) and not body.evidence:
            fault("evidence", NEEDS_A_PHOTO)
    if body.method == VisitMethod.PHONE and findings.vehicle_sighted is True:
        fault("findings.vehicle_sighted", "a phone visit cannot sight the car")
    if body.outcome == VisitOutcome.BORROWER_UNREACHABLE:
        unseen = _FROM_THE_BORROWER + (_FROM_THE_CAR if body.method != VisitMethod.FIELD else ())
        for item in unseen:
            if _claimed(findings, item):
                fault(f"findings.{item}", "cannot be claimed when the borrower was unreachable")
    return errors
