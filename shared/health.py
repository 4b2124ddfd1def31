"""Worker health in the database, and the readiness that reads it.

Design. A service's API and its worker are separate processes (and separate deployments), and
only the worker talks to the broker, so the API cannot see for itself whether events are
flowing. Each worker therefore reports on a tick (every few seconds) to three small tables in
its own service's schema:

- `worker_heartbeats`: one row per worker process and role (a consumer group, an outbox relay),
  with its partitions, lag, last poll, commit state and whether it reached the broker;
- `broker_positions`: per role and partition, the offset the broker is known to have held
  (`shared.broker_ledger`), so a loss is noticed even across worker restarts;
- `broker_losses`: each loss noticed, with what the operator should run, until acknowledged
  (`python -m shared.ops ack-loss`).

`/readyz` of the API reads them: it answers 503 problem+json when the database or the broker
cannot be reached, when no worker of a role has reported within `worker_stale_seconds`, or
while a loss is unacknowledged. The database is the one place both processes already share, so
this needs no new channel, works with any number of replicas (a role is healthy while any of
its members reports), and the state is there for an operator's query too. A stopped consumer
or a lost broker log is something the operator must act on, which is what readiness is for here;
liveness (`/healthz`) stays independent of it, so nothing is restarted because of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from shared.broker_ledger import BrokerLedger, Loss, Mark, Partition
from shared.db import unit_of_work

log = logging.getLogger(__name__)

# Rows of worker processes gone this long are removed by the next worker that starts.
FORGET_MEMBERS_AFTER = "1 day"


@dataclass(frozen=True)
class HealthTables:
    heartbeats: Table
    positions: Table
    losses: Table


def health_tables(metadata: MetaData) -> HealthTables:
    """The three tables, in the service's schema (its `metadata`)."""
    heartbeats = Table(
        "worker_heartbeats",
        metadata,
        Column("member", String(160), primary_key=True),
        Column("role", String(160), nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("heartbeat_at", DateTime(timezone=True), nullable=False),
        Column("detail", JSONB, nullable=False),
        Index("ix_worker_heartbeats_role_heartbeat", "role", "heartbeat_at"),
    )
    positions = Table(
        "broker_positions",
        metadata,
        Column("role", String(160), primary_key=True),
        Column("topic", String(255), primary_key=True),
        Column("partition", Integer, primary_key=True),
        Column("next_offset", BigInteger, nullable=False),
        Column("since", DateTime(timezone=True), nullable=False),
        Column("record_at", DateTime(timezone=True), nullable=True),
        Column("fingerprint", String(64), nullable=True),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    losses = Table(
        "broker_losses",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("role", String(160), nullable=False),
        Column("topic", String(255), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("expected_offset", BigInteger, nullable=False),
        Column("found_offset", BigInteger, nullable=False),
        Column("lost_since", DateTime(timezone=True), nullable=False),
        Column("detected_at", DateTime(timezone=True), nullable=False),
        Column("remedy", Text, nullable=False),
        Column("acknowledged_at", DateTime(timezone=True), nullable=True),
        # Two replicas noticing the same loss report it once (while it is open).
        Index(
            "uq_broker_losses_open",
            "role",
            "topic",
            "partition",
            "expected_offset",
            unique=True,
            postgresql_where=text("acknowledged_at IS NULL"),
        ),
    )
    return HealthTables(heartbeats, positions, losses)


def new_member_id(role: str) -> str:
    """This process's name in the heartbeats: role, host, pid and a random part."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:160]


class WorkerHealth:
    """Writes one worker role's heartbeat, positions and losses to its service's schema."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tables: HealthTables,
        role: str,
    ) -> None:
        self._sessions = sessions
        self._tables = tables
        self.role = role
        self.member = new_member_id(role)
        # The schema is named after the service (design.md), which the remedies name.
        self.service: str | None = tables.heartbeats.schema
        self._started = False
        self._pending: list[Loss] = []

    async def load_marks(self) -> dict[Partition, Mark]:
        p = self._tables.positions
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        p.c.topic,
                        p.c.partition,
                        p.c.next_offset,
                        p.c.since,
                        p.c.record_at,
                        p.c.fingerprint,
                    ).where(p.c.role == self.role)
                )
            ).all()
        return {
            (r.topic, r.partition): Mark(r.next_offset, r.since, r.record_at, r.fingerprint)
            for r in rows
        }

    def report(self, loss: Loss) -> None:
        """Log a loss now; it is saved with the next heartbeat."""
        log.error(
            "%s; records may be lost since %s. To repair: %s",
            loss.describe(),
            loss.lost_since.isoformat(timespec="seconds"),
            loss.remedy(self.service),
        )
        self._pending.append(loss)

    async def beat(self, detail: dict[str, Any], ledger: BrokerLedger) -> None:
        """Save the heartbeat, the ledger's new marks and any reported loss, in one
        transaction; what could not be saved is kept for the next beat."""
        advanced, reset = ledger.take_unsaved()
        pending, self._pending = self._pending, []
        try:
            async with unit_of_work(self._sessions) as session:
                await self._save(session, detail, advanced, reset, pending)
        except BaseException:
            ledger.give_back(advanced, reset)
            self._pending = pending + self._pending
            raise
        self._started = True

    async def _save(
        self,
        session: AsyncSession,
        detail: dict[str, Any],
        advanced: dict[Partition, Mark],
        reset: dict[Partition, Mark],
        losses: list[Loss],
    ) -> None:
        t = self._tables
        hb = insert(t.heartbeats).values(
            member=self.member,
            role=self.role,
            started_at=func.now(),
            heartbeat_at=func.now(),
            detail=detail,
        )
        await session.execute(
            hb.on_conflict_do_update(
                index_elements=[t.heartbeats.c.member],
                set_={"heartbeat_at": func.now(), "detail": hb.excluded.detail},
            )
        )
        if not self._started:
            await session.execute(
                delete(t.heartbeats).where(
                    t.heartbeats.c.role == self.role,
                    t.heartbeats.c.heartbeat_at
                    < func.now() - text(f"interval '{FORGET_MEMBERS_AFTER}'"),
                )
            )
        if losses:
            await session.execute(
                insert(t.losses)
                .values(
                    [
                        {
                            "role": loss.role,
                            "topic": loss.topic,
                            "partition": loss.partition,
                            "expected_offset": loss.expected_offset,
                            "found_offset": loss.found_offset,
                            "lost_since": loss.lost_since,
                            "detected_at": loss.detected_at,
                            "remedy": loss.remedy(self.service),
                        }
                        for loss in losses
                    ]
                )
                .on_conflict_do_nothing(
                    index_elements=["role", "topic", "partition", "expected_offset"],
                    index_where=t.losses.c.acknowledged_at.is_(None),
                )
            )
        await self._save_marks(session, advanced, keep_highest=True)
        await self._save_marks(session, reset, keep_highest=False)

    async def _save_marks(
        self, session: AsyncSession, marks: dict[Partition, Mark], *, keep_highest: bool
    ) -> None:
        """One statement for all of them. Advances keep the highest mark any replica saved;
        a reset after a loss replaces it (the old log is gone)."""
        if not marks:
            return
        p = self._tables.positions
        stmt = insert(p).values(
            [
                {
                    "role": self.role,
                    "topic": topic,
                    "partition": partition,
                    "next_offset": mark.next_offset,
                    "since": mark.since,
                    "record_at": mark.record_at,
                    "fingerprint": mark.fingerprint,
                    "updated_at": func.now(),
                }
                for (topic, partition), mark in sorted(marks.items())
            ]
        )
        new = stmt.excluded
        if keep_highest:
            higher = new.next_offset > p.c.next_offset
            stmt = stmt.on_conflict_do_update(
                index_elements=[p.c.role, p.c.topic, p.c.partition],
                set_={
                    "next_offset": new.next_offset,
                    "record_at": new.record_at,
                    "fingerprint": new.fingerprint,
                    "updated_at": func.now(),
                },
                where=higher,
            )
        else:
            stmt = stmt.on_conflict_do_update(
                index_elements=[p.c.role, p.c.topic, p.c.partition],
                set_={
                    "next_offset": new.next_offset,
                    "since": new.since,
                    "record_at": new.record_at,
                    "fingerprint": new.fingerprint,
                    "updated_at": func.now(),
                },
            )
        await session.execute(stmt)


# --- readiness ----------------------------------------------------------------------------

Checks = dict[str, dict[str, Any]]
ReadinessCheck = Callable[[AsyncConnection], Awaitable[Checks]]


@dataclass(frozen=True)
class WorkerReadiness:
    """The readiness check of a service's workers: each role reported lately, no open loss."""

    tables: HealthTables
    roles: Sequence[str]
    stale_after_seconds: float

    async def __call__(self, conn: AsyncConnection) -> Checks:
        hb, losses = self.tables.heartbeats, self.tables.losses
        age = func.extract("epoch", func.now() - hb.c.heartbeat_at)
        members = (
            await conn.execute(
                select(hb.c.role, hb.c.member, age.label("age"), hb.c.detail)
                .where(hb.c.role.in_(list(self.roles)))
                .order_by(hb.c.role, hb.c.heartbeat_at.desc())
            )
        ).all()
        latest = list({row.role: row for row in reversed(members)}.values())
        # A role is served while any of its replicas reports in time and reaches the broker:
        # a replica that was paused, or missed the broker on one tick, does not make the
        # service unready while another one carries its partitions.
        fresh: dict[str, Any] = {}
        for member in members:
            if float(member.age) > self.stale_after_seconds:
                continue
            best = fresh.get(member.role)
            if best is None or (
                best.detail.get("broker", "ok") != "ok"
                and member.detail.get("broker", "ok") == "ok"
            ):
                fresh[member.role] = member
        checks: Checks = {}
        for role in self.roles:
            row = fresh.get(role)
            if row is None:
                seen = next((r for r in latest if r.role == role), None)
                checks[role] = {
                    "ok": False,
                    "detail": (
                        f"no report for {float(seen.age):.0f}s" if seen else "never reported"
                    ),
                }
                continue
            broker = row.detail.get("broker", "ok")
            checks[role] = {
                "ok": broker == "ok",
                "detail": {
                    "member": row.member,
                    "seconds_ago": round(float(row.age), 1),
                    **row.detail,
                },
            }
        open_losses = (
            await conn.execute(
                select(
                    losses.c.role,
                    losses.c.topic,
                    losses.c.partition,
                    losses.c.lost_since,
                    losses.c.detected_at,
                    losses.c.remedy,
                )
                .where(losses.c.acknowledged_at.is_(None))
                .order_by(losses.c.id)
                .limit(20)
            )
        ).all()
        checks["broker_loss"] = {
            "ok": not open_losses,
            "detail": [
                {
                    "role": r.role,
                    "topic": r.topic,
                    "partition": r.partition,
                    "lost_since": _iso(r.lost_since),
                    "detected_at": _iso(r.detected_at),
                    "remedy": r.remedy,
                }
                for r in open_losses
            ]
            or "none",
        }
        return checks


async def readiness_response(
    engine: AsyncEngine,
    bootstrap_servers: str,
    extra: ReadinessCheck | None = None,
    *,
    timeout_seconds: float = 2.0,
) -> JSONResponse:
    """`/readyz`: 200 with each check, or 503 problem+json naming the failing ones."""
    checks: Checks = {}
    try:
        async with asyncio.timeout(timeout_seconds), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = {"ok": True, "detail": "ok"}
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure
        checks["database"] = {"ok": False, "detail": type(exc).__name__}
    if extra is not None and checks["database"]["ok"]:
        try:
            async with asyncio.timeout(timeout_seconds), engine.connect() as conn:
                checks.update(await extra(conn))
        except Exception as exc:  # noqa: BLE001 - e.g. the health tables not migrated yet
            checks["workers"] = {"ok": False, "detail": type(exc).__name__}
    checks["broker"] = await _broker_reachable(bootstrap_servers, timeout_seconds)
    failing = [name for name, check in checks.items() if not check["ok"]]
    if not failing:
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "not ready: " + ", ".join(failing),
            "checks": checks,
        },
        status_code=503,
        media_type="application/problem+json",
    )


async def _broker_reachable(bootstrap_servers: str, timeout_seconds: float) -> dict[str, Any]:
    """Whether any bootstrap server accepts a connection (the workers report the rest)."""
    errors = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(timeout_seconds):
                _, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
            writer.close()
            return {"ok": True, "detail": "ok"}
        except (OSError, ValueError, TimeoutError) as exc:
            errors.append(f"{server.strip()}: {type(exc).__name__}")
    return {"ok": False, "detail": "; ".join(errors) or "no bootstrap servers"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
