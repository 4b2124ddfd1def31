"""`make faults [SCENARIO=name]`: the real processes under faults while 20,000 postings
flow (see the package docstring); a summary per scenario; exit status 1 if any fails."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from shared import devstack
from tests.faults.infra import postgres
from tests.faults.run import Outcome, Workload, run_scenario
from tests.faults.scenarios import DEFAULT, SCENARIOS


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"one or more of {', '.join(SCENARIOS)} (default: {', '.join(DEFAULT)})",
    )
    parser.add_argument("--loans", type=int, default=Workload.loans)
    parser.add_argument("--postings", type=int, default=Workload.postings)
    parser.add_argument("--keep", action="store_true", help="keep data and logs on success")
    args = parser.parse_args()
    names = args.scenarios or list(DEFAULT)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    workload = Workload(loans=args.loans, postings=args.postings)
    # The harness's own chatter (aiokafka reconnecting to a dead broker) is not the verdict.
    logging.basicConfig(level=logging.CRITICAL)

    # SIGTERM between scenarios: unwind like Ctrl-C, so PostgreSQL is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    root = devstack.ROOT / ".data"
    root.mkdir(exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="faults-", dir=root))
    outcomes: list[Outcome] = []
    started = time.monotonic()
    interrupted = False
    try:
        with postgres(work_dir / "pg") as pg:
            for name in names:
                scenario = SCENARIOS[name]
                print(f"\n== {name}: {scenario.description}", flush=True)
                began = time.monotonic()
                try:
                    outcome = asyncio.run(run_scenario(scenario, pg, work_dir, workload))
                except asyncio.CancelledError:
                    raise KeyboardInterrupt from None  # stopped by Ctrl-C or SIGTERM
                except Exception as exc:  # noqa: BLE001 - one broken scenario, not the suite
                    traceback.print_exc()
                    outcome = Outcome.crashed(name, work_dir / name, exc)
                outcomes.append(outcome)
                print(_summary(outcome, time.monotonic() - began), flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted; everything the suite started is stopped", flush=True)
    finally:
        passed = len(outcomes) == len(names) and all(o.passed for o in outcomes)
        print(f"\n{_table(outcomes)}\ntotal {time.monotonic() - started:.0f}s", flush=True)
        if passed and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"logs and data kept in {work_dir}", flush=True)
    sys.exit(130 if interrupted else 0 if passed else 1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _summary(outcome: Outcome, seconds: float) -> str:
    lines = [f"-- {outcome.scenario}: {'PASS' if outcome.passed else 'FAIL'} in {seconds:.0f}s"]
    for name, (ok, detail) in outcome.checks.items():
        lines.append(f"   [{'ok' if ok else 'FAIL'}] {name}: {detail}")
    restarted = {name: n for name, n in outcome.restarts.items() if n}
    lines.append(f"   restarts by the supervisor: {restarted or 'none'}")
    if outcome.dead_letter_reasons:
        lines.append("   dead letters:")
        lines += [f"     {reason}" for reason in outcome.dead_letter_reasons]
    if outcome.problems:
        lines.append("   commonest worker warnings/errors:")
        lines += [f"     {n:5d} x {text}" for n, text in outcome.problems]
    return "\n".join(lines)


def _table(outcomes: list[Outcome]) -> str:
    header = (
        f"{'scenario':15s} {'postings':>8s} {'missed':>6s} {'sched.':>6s} {'alerts':>6s} "
        f"{'dup':>4s} {'DLQ':>4s} {'drain':>7s}  verdict"
    )
    rows = [header]
    for o in outcomes:
        drain = f"{o.drain_seconds:6.1f}s" if o.drain_seconds is not None else "  never"
        rows.append(
            f"{o.scenario:15s} {o.postings:8d} {o.missed:6d} {o.applied.get('scheduler', 0):6d} "
            f"{o.applied.get('alerts', 0):6d} {o.duplicates:4d} {o.dead_letters:4d} {drain}  "
            f"{'PASS' if o.passed else 'FAIL'}"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
