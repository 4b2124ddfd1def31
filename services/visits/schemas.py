"""Request and response bodies of the visits API."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from services.visits.evidence_types import EvidenceKind
from shared.events import VisitFindings
from shared.validation import (
    Identifier,
    LoanId,
    MaskedText,
    Money,
    Note,
    ObservedAt,
    SingleLineText,
)
from shared.vocabulary import (
    EmploymentStatus,
    IncomeChange,
    VehicleCondition,
    VehicleUsage,
    VisitMethod,
    VisitOutcome,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeoPoint(Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class FindingsIn(VisitFindings):
    """The four key items as the event carries them. A misspelt field from the app is
    refused here rather than silently dropped, which the event model would do; and a yes or
    no is a JSON boolean (strict: `0` or `"no"` is refused, not read as false)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Strict is for the yes/no items; the vocabulary fields take their values as strings
    # (as JSON carries them), and anything outside the vocabulary is still refused.
    employment_status: EmploymentStatus = Field(EmploymentStatus.UNKNOWN, strict=False)
    income_change: IncomeChange = Field(IncomeChange.UNKNOWN, strict=False)
    vehicle_usage: VehicleUsage = Field(VehicleUsage.UNKNOWN, strict=False)
    vehicle_condition: VehicleCondition = Field(VehicleCondition.UNKNOWN, strict=False)


# Photos and scans one visit may reference: a handful in practice; the bound keeps one
# capture's lock set and chain entry small.
MAX_EVIDENCE_PER_VISIT = 20


def _ended_after_start(value: datetime, info: ValidationInfo) -> datetime:
    started_at = info.data.get("started_at")
    if started_at is not None and value < started_at:
        raise ValueError("must not be before started_at")
    return value


def _listed_once(value: list[uuid.UUID]) -> list[uuid.UUID]:
    if len(set(value)) != len(value):
        raise ValueError("lists the same evidence twice")
    return value


class ReviewState(StrEnum):
    """Where a submitted visit version stands in its supervisor's review (maker-checker)."""

    PENDING = "pending"
    APPROVED = "approved"
    # Sent back to its agent with a reason; the agent answers with a correction.
    RETURNED = "returned"
    # A later version corrects it: it stays on the record, provable, but is no longer
    # the visit's current version, and is not reviewed.
    SUPERSEDED = "superseded"


class ReviewDecision(StrEnum):
    APPROVE = "approve"
    RETURN = "return"


# The state each decision leaves a version in.
STATE_AFTER: dict[ReviewDecision, ReviewState] = {
    ReviewDecision.APPROVE: ReviewState.APPROVED,
    ReviewDecision.RETURN: ReviewState.RETURNED,
}


class VisitIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": None,
                    "loan_id": "L-1",
                    "method": "phone",
                    "outcome": "completed",
                    "started_at": "2026-11-20T10:00:00+08:00",
                    "ended_at": "2026-11-20T10:12:00+08:00",
                    "findings": {"identity_verified": True, "employment_status": "stable"},
                    "notes": "借款人在家，车辆停在小区",
                }
            ]
        }
    )

    # Field order matters: the validators below read fields declared before them.
    # Offline-first: the device may choose the visit's id when it creates it. A capture
    # sent again with the same id is a replay of that visit, whatever its Idempotency-Key
    # (and after the key has expired).
    visit_id: uuid.UUID | None = None
    task_id: uuid.UUID | None = None
    loan_id: LoanId
    method: VisitMethod
    outcome: VisitOutcome
    # Not before 2000, not in the future (beyond clock skew): in UTC once validated.
    started_at: ObservedAt
    ended_at: ObservedAt
    findings: FindingsIn
    # Required on a field visit: capture_rules names it with the method's other rules.
    geo: GeoPoint | None = None
    # National ids and phone numbers typed in are masked before the visit is stored.
    notes: Note | None = None
    # Evidence this agent uploaded first (`POST /v1/evidence`), not yet on another visit;
    # a completed field visit needs at least one photo (capture_rules).
    evidence: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_EVIDENCE_PER_VISIT)

    @field_validator("ended_at")
    @classmethod
    def _not_before_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        return _ended_after_start(value, info)

    @field_validator("evidence")
    @classmethod
    def _each_once(cls, value: list[uuid.UUID]) -> list[uuid.UUID]:
        return _listed_once(value)

    def request_hash(self) -> str:
        """SHA-256 of the canonical JSON of the validated body: what an idempotent retry
        must repeat. Defaults are filled in, so omitting a default equals sending it. No
        evidence is left out of it, so a capture queued before evidence existed hashes as
        it did then, and its retry still replays."""
        # Neither is an absent visit_id: captures queued before either existed hash as then.
        left_out = {"evidence"} if not self.evidence else set()
        if self.visit_id is None:
            left_out.add("visit_id")
        canonical = json.dumps(
            self.model_dump(mode="json", exclude=left_out or None),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class CorrectionIn(Strict):
    """A new version of a submitted visit: everything the agent found, in full, as a
    capture (the capture rules apply). Loan, task and method are the corrected version's:
    a correction restates what a visit found, it does not turn it into another visit.
    `evidence` may list the corrected version's own photos and scans (they are carried
    over) as well as new uploads."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "outcome": "completed",
                    "started_at": "2026-11-20T10:00:00+08:00",
                    "ended_at": "2026-11-20T10:12:00+08:00",
                    "findings": {"identity_verified": True, "employment_status": "unstable"},
                    "notes": "更正：借款人已换工作",
                }
            ]
        }
    )

    outcome: VisitOutcome
    started_at: ObservedAt
    ended_at: ObservedAt
    findings: FindingsIn
    geo: GeoPoint | None = None
    notes: Note | None = None
    evidence: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_EVIDENCE_PER_VISIT)

    @field_validator("ended_at")
    @classmethod
    def _not_before_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        return _ended_after_start(value, info)

    @field_validator("evidence")
    @classmethod
    def _each_once(cls, value: list[uuid.UUID]) -> list[uuid.UUID]:
        return _listed_once(value)


class ReviewIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"decision": "return", "reason": "照片看不清车牌"}]}
    )

    decision: ReviewDecision
    # Required to return a visit: its agent has to know what to correct. Validated when
    # absent too, so a return without one is a 422 naming `body.reason`.
    reason: Note | None = Field(default=None, validate_default=True)

    @field_validator("reason")
    @classmethod
    def _return_says_why(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("decision") == ReviewDecision.RETURN and not (value or "").strip():
            raise ValueError("required to return a visit")
        return value


class ReviewOut(BaseModel):
    decision: ReviewDecision
    reason: MaskedText | None
    reviewed_by: str
    reviewed_at: datetime


class DraftIn(Strict):
    """An unfinished visit as the app has it: any of a capture's fields, each checked for
    its shape only (the capture rules apply at submission)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"loan_id": "L-1", "method": "field", "notes": "到达小区，车不在"}]
        }
    )

    task_id: uuid.UUID | None = None
    loan_id: LoanId | None = None
    method: VisitMethod | None = None
    outcome: VisitOutcome | None = None
    started_at: ObservedAt | None = None
    ended_at: ObservedAt | None = None
    findings: FindingsIn | None = None
    geo: GeoPoint | None = None
    notes: Note | None = None
    evidence: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_EVIDENCE_PER_VISIT)


class DraftOut(DraftIn):
    visit_id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    notes: MaskedText | None = None


class EvidenceRef(BaseModel):
    evidence_id: uuid.UUID
    kind: EvidenceKind
    sha256: str


class EvidenceOut(BaseModel):
    """An uploaded photo or scan: reference its `evidence_id` in a visit's `evidence`."""

    evidence_id: uuid.UUID
    kind: EvidenceKind
    content_type: str
    size_bytes: int
    # SHA-256 of the bytes as received, hex: the app may compare it with its own.
    sha256: str
    created_at: datetime
    # None until a visit references it.
    visit_id: uuid.UUID | None


class VisitOut(BaseModel):
    visit_id: uuid.UUID
    agent_id: str
    created_at: datetime
    task_id: uuid.UUID | None
    loan_id: str
    method: VisitMethod
    outcome: VisitOutcome
    started_at: datetime
    ended_at: datetime
    findings: VisitFindings
    geo: GeoPoint | None
    # Masked on the way out too: notes stored before masking began are shown masked.
    notes: MaskedText | None
    # What was attached, by id and hash (the bytes: `GET /v1/evidence/{evidence_id}`).
    evidence: list[EvidenceRef] = []
    # Versions: 1 for a visit as first submitted; a correction names the version it corrects.
    version: int = 1
    corrects_visit_id: uuid.UUID | None = None
    # The version that corrects this one, once there is one (review_state `superseded`).
    corrected_by: uuid.UUID | None = None
    review_state: ReviewState = ReviewState.PENDING
    # The supervisor's decision, once made (a returned visit's reason is here).
    review: ReviewOut | None = None


class ChainProof(BaseModel):
    """A visit's entry in its loan's tamper-evident chain. `payload_hash` is SHA-256 over the
    canonical JSON (sorted keys, no whitespace, UTF-8, times in UTC with microseconds) of the
    visit's recorded fields (`format` 2: with the loan's region and the attached evidence's
    ids and SHA-256s; 1: entries from before evidence); `entry_hash` is SHA-256 over the
    canonical JSON of `{seq, prev_hash, payload_hash}`; a loan's first entry has a
    `prev_hash` of 64 zeros."""

    visit_id: uuid.UUID
    loan_id: str
    format: int
    seq: int
    prev_hash: str
    payload_hash: str
    entry_hash: str
    chained_at: datetime


class ChainBreak(BaseModel):
    loan_id: str
    # None for a visit that has no entry at all.
    seq: int | None
    visit_id: uuid.UUID
    reason: str


class ChainVerification(BaseModel):
    """The chains recomputed from the stored visits; `first_break` is the earliest entry
    (by loan, then seq) that does not hold, or a visit that was never chained."""

    loan_id: str | None
    entries_checked: int
    intact: bool
    first_break: ChainBreak | None


# --- third-party reports -------------------------------------------------------------------


class ReportKind(StrEnum):
    """What a partner observed (services/visits/third_party.py says what each shows)."""

    GPS_POSITION = "gps_position"
    DEVICE_OFFLINE = "device_offline"
    GEOFENCE_EXIT = "geofence_exit"
    DWELL_AT_PAWN_LOT = "dwell_at_pawn_lot"
    RIDE_HAILING_REGISTRATION = "ride_hailing_registration"
    COURT_JUDGMENT = "court_judgment"


PlaceCategory = Literal["pawn_shop", "used_car_lot", "parking", "depot", "other"]
ShortText = Annotated[SingleLineText, Field(min_length=1, max_length=200)]


class ReportDetails(Strict):
    """What the partner observed, each item optional and bounded: kept with the report for
    whoever follows up; only `position` also becomes the visit's `geo`."""

    position: GeoPoint | None = None
    dwell_minutes: int | None = Field(default=None, ge=0, le=525_600)
    place_name: ShortText | None = None
    place_category: PlaceCategory | None = None
    # The ride-hailing platform, or the court.
    platform: ShortText | None = None
    court: ShortText | None = None
    case_number: ShortText | None = None
    claim_amount: Money | None = None


class ThirdPartyReportIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "report_id": "GPS-20261130-0001",
                    "partner": "gps-partner",
                    "kind": "dwell_at_pawn_lot",
                    "loan_id": "L-1",
                    "observed_at": "2026-11-30T09:00:00+08:00",
                    "details": {
                        "position": {"lat": 31.2304, "lon": 121.4737},
                        "dwell_minutes": 240,
                        "place_category": "pawn_shop",
                    },
                }
            ]
        }
    )

    # The partner's own id for the report: a resend with the same id records nothing new.
    report_id: Identifier
    # Who reports: the partner's token subject, which it must equal.
    partner: Identifier
    kind: ReportKind
    loan_id: LoanId
    observed_at: ObservedAt
    details: ReportDetails = Field(default_factory=ReportDetails)

    def request_hash(self) -> str:
        """SHA-256 of the canonical report: what a resend under the same id must repeat."""
        canonical = json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class ThirdPartyReportOut(BaseModel):
    report_id: str
    partner: str
    kind: ReportKind
    loan_id: str
    observed_at: datetime
    details: ReportDetails
    received_at: datetime
    # The visit the report became (method `third_party`, agent_id = the partner).
    visit: VisitOut
