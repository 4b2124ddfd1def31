"""The stuck-test watchdog, run on a test that hangs: the run ends with code 3 and prints
where the hung task waits, instead of holding CI until CI's own limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests import watchdog

ROOT = Path(__file__).resolve().parents[2]


def test_a_hung_test_ends_the_run_with_its_task_stack(tmp_path: Path) -> None:
    (tmp_path / "test_hangs.py").write_text(
        "import asyncio\n\n\n"
        "async def test_waits_for_nothing() -> None:\n"
        "    await asyncio.Event().wait()\n"
    )
    # The suite's own settings (asyncio mode and loop scopes), the watchdog as a plugin.
    config = ["-c", str(ROOT / "pyproject.toml"), "-o", "addopts="]
    pytest_args = [*config, "-p", "tests.watchdog", "-p", "no:cacheprovider"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args, str(tmp_path / "test_hangs.py")],
        cwd=ROOT,
        env=os.environ | {"TEST_DEADLINE_SECONDS": "2", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == watchdog.EXIT_CODE, run.stdout + run.stderr
    assert "test_waits_for_nothing still running after 2s" in run.stderr
    # The task's own stack: the line it waits on.
    assert "await asyncio.Event().wait()" in run.stderr
