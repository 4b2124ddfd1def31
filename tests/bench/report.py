"""The figures as one table: metric, value, unit, target, ratio to it, verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.bench.processes import Memory


@dataclass(frozen=True)
class Row:
    metric: str
    value: float
    unit: str
    target: float | None = None
    lower_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        """How far the value is from its target: >= 1.0 meets it."""
        if self.target is None or self.value <= 0:
            return None
        return self.target / self.value if self.lower_is_better else self.value / self.target


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # checkpoint -> process -> memory
    memory: dict[str, dict[str, Memory]] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {render(row)}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {text}", flush=True)

    def table(self) -> str:
        header = (
            f"{'metric':42s} {'value':>12s} {'unit':10s} {'target':>14s} {'ratio':>7s}  verdict"
        )
        return "\n".join([header, "-" * len(header), *map(render, self.rows)])

    def memory_table(self) -> str:
        """Per process: RSS/peak RSS (MiB) at each checkpoint."""
        checkpoints = list(self.memory)
        names = list(dict.fromkeys(n for at in self.memory.values() for n in at))
        width = max(11, *(len(c) for c in checkpoints)) if checkpoints else 11
        lines = [
            f"{'process (rss/peak MiB)':24s} " + " ".join(f"{c:>{width}s}" for c in checkpoints)
        ]
        for name in names:
            cells = [str(self.memory[c].get(name, "-")) for c in checkpoints]
            lines.append(f"{name:24s} " + " ".join(f"{cell:>{width}s}" for cell in cells))
        return "\n".join(lines)


def render(row: Row) -> str:
    if row.target is None:
        target, ratio, verdict = "", "", ""
    else:
        sign = "<" if row.lower_is_better else ">="
        target = f"{sign} {_number(row.target)}"
        ratio = f"{row.ratio:7.3f}" if row.ratio is not None else "      -"
        verdict = "meets" if row.ratio is not None and row.ratio >= 1.0 else "MISSES"
    return (
        f"{row.metric:42s} {_number(row.value):>12s} {row.unit:10s} {target:>14s} "
        f"{ratio:>7s}  {verdict}"
    ).rstrip()


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
