"""The shapes every value the APIs accept must have, as reusable annotated types.

One definition per kind of value, used by the request bodies, the path and the query
parameters of all three services, so hostile input is refused at the edge with a 422 naming
the field, and never reaches PostgreSQL (which cannot store NUL) or date arithmetic (which
overflows past year 9999). Each type also says in the OpenAPI document what it accepts.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from shared.pii import mask_pii

# --- identifiers --------------------------------------------------------------------------

# Loans, agents, borrowers, regions and alert rules: what core banking and the admin console
# use as keys. Safe in a URL, a log line and a Kafka key as they are.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]

# Path words of the loan routes that are not loans (`/v1/loans/import`).
RESERVED_LOAN_IDS = frozenset({"import"})


def _not_reserved(value: str) -> str:
    if value.lower() in RESERVED_LOAN_IDS:
        raise PydanticCustomError("reserved_id", "'{value}' is reserved", {"value": value})
    return value


LoanId = Annotated[
    Identifier,
    AfterValidator(_not_reserved),
    Field(description="Loan id; `import` is reserved."),
]

# --- free text ----------------------------------------------------------------------------

# C0 and C1 control characters (Unicode category Cc). PostgreSQL text cannot hold NUL, and
# the others have no business in a name, a plate or a note either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Notes are typed on a phone: line breaks and tabs are text there.
_CONTROL_IN_NOTES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Not characters at all: a lone UTF-16 surrogate (`"\ud800"` is valid JSON, but no UTF-8
# can store it: hashing, storing or answering it failed with a 500), and the noncharacters
# Unicode reserves for internal use (U+FDD0..U+FDEF, U+xFFFE and U+xFFFF of every plane).
_NOT_A_CHARACTER = re.compile(
    r"[\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"\\U{plane:04X}FFFE\\U{plane:04X}FFFF" for plane in range(17))
    + "]"
)
SINGLE_LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]*$"
MULTI_LINE_PATTERN = (
    r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]*$"
)


# Either kind of fault in one search: the text of a million-line import passes through these
# validators, and almost all of it is clean. Which fault it was is told only when there is one.
_NOT_SINGLE_LINE = re.compile(f"{_CONTROL.pattern}|{_NOT_A_CHARACTER.pattern}")
_NOT_MULTI_LINE = re.compile(f"{_CONTROL_IN_NOTES.pattern}|{_NOT_A_CHARACTER.pattern}")


def _characters(value: str) -> None:
    if _NOT_A_CHARACTER.search(value):
        raise PydanticCustomError(
            "not_a_character", "must not contain lone surrogates or Unicode noncharacters"
        )


def _single_line(value: str) -> str:
    if _NOT_SINGLE_LINE.search(value) is None:
        return value
    if _CONTROL.search(value):
        raise PydanticCustomError("control_character", "must not contain control characters")
    _characters(value)
    return value  # pragma: no cover - one of the two searches found the fault


def _multi_line(value: str) -> str:
    if _NOT_MULTI_LINE.search(value) is None:
        return value
    if _CONTROL_IN_NOTES.search(value):
        raise PydanticCustomError(
            "control_character", "must not contain control characters other than line breaks"
        )
    _characters(value)
    return value  # pragma: no cover - one of the two searches found the fault


# A name, an occupation, a plate, a make and model: one line of printable text.
SingleLineText = Annotated[
    str, AfterValidator(_single_line), Field(json_schema_extra={"pattern": SINGLE_LINE_PATTERN})
]

# A note typed by an agent, a supervisor or the operations desk. Any national id or phone
# number in it is masked before it goes further (stored, returned, announced).
Note = Annotated[
    str,
    AfterValidator(_multi_line),
    AfterValidator(mask_pii),
    Field(
        max_length=2000,
        json_schema_extra={"pattern": MULTI_LINE_PATTERN},
        description="Free text; national ids and phone numbers in it are masked.",
    ),
]

# Free text on its way out: notes stored before masking began are shown masked as well.
MaskedText = Annotated[str, AfterValidator(mask_pii)]

# --- flags --------------------------------------------------------------------------------

# A JSON true or false, nothing else: `"active": 0` or `"yes"` is a 422, not a guess.
Flag = Annotated[bool, Strict()]

# --- borrower identity (ASCII digits only: `\d` would also take `１` and `١`) ---------------

NationalId = Annotated[
    str, Field(pattern=r"^[0-9]{17}[0-9X]$", description="18-character resident id")
]
Phone = Annotated[str, Field(pattern=r"^\+?[0-9]{7,15}$", description="digits, optional +")]

# --- money --------------------------------------------------------------------------------

# Money travels as a decimal string in CNY (design.md, contract): at most 16 integer digits
# and 2 decimals, which is what NUMERIC(18, 2) stores. A JSON number is refused: a float
# cannot carry `0.10` exactly.
MONEY_PATTERN = r"^[0-9]{1,16}(\.[0-9]{1,2})?$"
_MONEY = re.compile(MONEY_PATTERN)


def _money(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str) or _MONEY.fullmatch(value) is None:
        raise PydanticCustomError(
            "money", 'must be a decimal string with at most 2 decimals, e.g. "12000.00"'
        )
    return value


def _plain(value: Decimal) -> str:
    return format(value, "f")


# The constraints come before the BeforeValidator so that pydantic-core checks them in its
# decimal validator: after it, pydantic checks them in Python, 5 us a value more (a million
# loans of an import carry three amounts each).
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=18, decimal_places=2),
    BeforeValidator(_money),
    PlainSerializer(_plain, return_type=str),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN, "examples": ["12000.00"]}),
]
# A ratio shown with four decimals (loan-to-value).
Ratio = Annotated[
    Decimal,
    PlainSerializer(_plain, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,4})?$"}),
]

# --- dates and times ----------------------------------------------------------------------

# Business dates (disbursement, valuation, due dates): wide enough for any loan book, narrow
# enough that date arithmetic on them (a 120-month term, a due date plus days) cannot
# overflow.
EARLIEST_DATE = date(2000, 1, 1)
LATEST_DATE = date(2099, 12, 31)
BusinessDate = Annotated[
    date,
    Field(
        ge=EARLIEST_DATE,
        le=LATEST_DATE,
        description=f"A date from {EARLIEST_DATE} to {LATEST_DATE}.",
        # JSON Schema's `minimum` is for numbers; these are the format-aware bounds.
        json_schema_extra={
            "formatMinimum": EARLIEST_DATE.isoformat(),
            "formatMaximum": LATEST_DATE.isoformat(),
        },
    ),
]

# How far ahead of this server's clock a phone's clock may run.
CLOCK_SKEW = timedelta(minutes=5)
_EARLIEST_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)


def _observed(value: datetime) -> datetime:
    # One representation per instant: `10:00+08:00` and `02:00Z` hash and read back alike.
    value = value.astimezone(UTC)
    if value < _EARLIEST_INSTANT:
        raise PydanticCustomError("too_early", "must not be before 2000-01-01")
    if value > datetime.now(UTC) + CLOCK_SKEW:
        raise PydanticCustomError("in_the_future", "must not be in the future")
    return value


# When something was observed (a visit started or ended): in UTC, with an offset on the way
# in, not before 2000 and not in the future beyond clock skew.
ObservedAt = Annotated[
    AwareDatetime,
    AfterValidator(_observed),
    Field(
        description="With a UTC offset; not before 2000-01-01, not in the future.",
        json_schema_extra={"formatMinimum": _EARLIEST_INSTANT.isoformat()},
    ),
]
