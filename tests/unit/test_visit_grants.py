"""The scheduler's yeses a visits API process remembers (services/visits/grants.py), and the
wrk figures the capture bench reads (tests/bench/wrk.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.visits.grants import TaskGrants
from tests.bench import wrk


def test_a_grant_is_kept_until_the_least_recently_used_is_dropped() -> None:
    grants = TaskGrants(max_entries=2)
    assert ("AG-1", "L-1") not in grants
    grants.add(("AG-1", "L-1"))
    grants.add(("AG-1", "L-2"))
    assert ("AG-1", "L-1") in grants  # now the most recently used
    grants.add(("AG-2", "L-1"))
    assert ("AG-1", "L-2") not in grants  # dropped: asked about again next time
    assert ("AG-1", "L-1") in grants
    assert ("AG-2", "L-1") in grants
    # A grant is the agent's own: another agent on the same loan is not granted.
    assert ("AG-3", "L-1") not in grants


def test_wrk_figures_are_read_from_the_scripts_done_line() -> None:
    output = (
        "Running 20s test @ http://127.0.0.1:8002\n"
        'WRK_JSON {"requests":2000,"duration_us":20000000,"non_2xx":3,"connect":0,"read":1,'
        '"write":0,"timeout":0,"p50_us":12500,"p90_us":30000,"p99_us":45000,"max_us":90000}\n'
    )
    figures = wrk.parse(output)
    assert figures.rate == 100.0
    assert figures.failed == 4
    assert (figures.p50_ms, figures.p99_ms, figures.max_ms) == (12.5, 45.0, 90.0)
    with pytest.raises(RuntimeError, match="no figures"):
        wrk.parse("unable to connect to 127.0.0.1:8002 Connection refused\n")


def test_the_lua_script_carries_each_pair_and_a_valid_body(tmp_path: Path) -> None:
    lua = wrk.script(tmp_path / "v.lua", [("tok-1", "L-1"), ("tok-2", "L-2")], {"a": True})
    text = lua.read_text()
    assert '{"tok-1", "L-1"}, {"tok-2", "L-2"}' in text
    assert '[==[{"a":true}]==]' in text
    assert "Idempotency-Key" in text and '"visit_id":"%s"' in text
    assert text.count("%%") == 0  # every format placeholder was filled or escaped
    with pytest.raises(ValueError):
        wrk.script(tmp_path / "none.lua", [], {})
