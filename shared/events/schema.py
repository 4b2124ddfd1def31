"""The JSON Schema of each topic's event, as checked-in files for partner integrators.

`python -m shared.events.schema` writes `docs/events/<topic>.schema.json` from the event
models; `python -m shared.events.schema --check` only compares and exits 1 on a difference.
`tests/unit/test_event_contract.py` fails when a model and its file disagree, so a changed
type, bound or enum value is a reviewed change of the files, never a silent one.

The schema is the validation schema: what every consumer of the topic accepts (money as a
decimal string or a number, say), which is what a producer must send.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from shared.events.topics import EVENT_MODELS

DOCS_DIR: Final = Path(__file__).resolve().parents[2] / "docs" / "events"
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
REGENERATE: Final = "python -m shared.events.schema"


def event_schema(topic: str) -> dict[str, Any]:
    """The JSON Schema of the topic's event model, with its dialect and topic named."""
    schema = EVENT_MODELS[topic].model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": schema_file_name(topic), **schema}


def schema_file_name(topic: str) -> str:
    return f"{topic}.schema.json"


def render(schema: dict[str, Any]) -> str:
    """Stable text: sorted keys, two-space indent, non-ASCII kept, a final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def stale_files(directory: Path) -> list[str]:
    """The schema files in `directory` that differ from the models, are missing, or belong
    to no topic; empty when the checked-in files are the contract."""
    expected = {schema_file_name(topic): render(event_schema(topic)) for topic in EVENT_MODELS}
    stale = [
        name
        for name, text in expected.items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != text
    ]
    stale += sorted(
        path.name for path in directory.glob("*.schema.json") if path.name not in expected
    )
    return stale


def write(directory: Path) -> list[Path]:
    """Write every topic's schema file and remove those of topics that no longer exist."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for topic in EVENT_MODELS:
        path = directory / schema_file_name(topic)
        path.write_text(render(event_schema(topic)), "utf-8")
        written.append(path)
    for path in directory.glob("*.schema.json"):
        if path not in written:
            path.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description="Write (or check) docs/events/<topic>.schema.json."
    )
    parser.add_argument("--out", type=Path, default=DOCS_DIR, help="where the files live")
    parser.add_argument(
        "--check", action="store_true", help="compare only; exit 1 if a file is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"stale: {args.out / name}", file=sys.stderr)
        return 1 if stale else 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
