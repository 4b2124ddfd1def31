"""Fixtures shared by the unit tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from shared.logging import SERVER_LOGGERS


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The logging set-up as it was before the test, which reconfigures it."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in SERVER_LOGGERS)]
    saved = [(lg, lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    try:
        yield
    finally:
        for lg, handlers, propagate, level in saved:
            lg.handlers[:] = handlers
            lg.propagate = propagate
            lg.setLevel(level)
