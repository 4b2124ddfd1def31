"""The processes the bench runs and watches: the services' own (started the way
`shared.devstack` starts them), the broker, and the raw baseline consumer.

Each is a plain child in its own session, not supervised: a process that dies during a
measurement must show, not be restarted behind the figures. `Processes.stop_all` ends
every one of them, also on Ctrl-C or an exception.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shared import devstack

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Memory:
    """Resident set now and its high-water mark, in MiB (from /proc/<pid>/status)."""

    rss_mib: float
    peak_mib: float

    def __str__(self) -> str:
        return f"{self.rss_mib:.0f}/{self.peak_mib:.0f}"


def memory_of(pid: int) -> Memory | None:
    """None once the process is gone."""
    fields: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024
    except FileNotFoundError:
        return None
    return Memory(fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0))


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU the process has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name may hold spaces; the fields after its ")" are fixed.
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def memory(self) -> Memory | None:
        return memory_of(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds_of(self.pid)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): it holds its memory and connections but takes no
        CPU, so another process can be measured with the machine to itself."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)

    def stop(self, within: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(within)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Processes:
    log_dir: Path
    env: dict[str, str]
    running: dict[str, Proc] = field(default_factory=dict)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv),
                cwd=devstack.ROOT,
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Ctrl-C reaches only the bench, which then stops these in order.
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path)
        self.running[name] = proc
        return proc

    def adopt(self, name: str, popen: subprocess.Popen[bytes]) -> Proc:
        """A process started elsewhere (the broker), watched and stopped like the others."""
        proc = Proc(name, popen, None)
        self.running[name] = proc
        return proc

    def __getitem__(self, name: str) -> Proc:
        return self.running[name]

    def dead(self) -> list[str]:
        return [name for name, proc in self.running.items() if not proc.alive()]

    def stop(self, name: str) -> None:
        proc = self.running.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop_all(self) -> None:
        # Newest first: consumers and APIs before the broker they talk to.
        for name in reversed(list(self.running)):
            self.stop(name)


@contextmanager
def processes(log_dir: Path, env: dict[str, str]) -> Iterator[Processes]:
    procs = Processes(log_dir, env)
    try:
        yield procs
    finally:
        procs.stop_all()
