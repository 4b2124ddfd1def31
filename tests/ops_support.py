"""Running the operator commands (`python -m shared.ops`) as an operator would, and reading
what they act on."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from shared.events import dlq_topic
from shared.ops import read_records
from tests.conftest import ROOT


async def run_ops(database_url: str, bootstrap: str, *args: str) -> str:
    """`python -m shared.ops *args` against this database and broker; its output. Fails the
    test when the command fails."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.ops",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


async def dead_letters_of(bootstrap: str, topic: str, group: str) -> list[dict[str, Any]]:
    """Every dead letter `group` wrote for `topic`, read to the current end."""
    return [
        record
        for record in await read_records(bootstrap, dlq_topic(topic))
        if isinstance(record, dict) and record.get("consumer_group") == group
    ]
