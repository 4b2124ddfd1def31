"""Every service's own Alembic history, on a database of its own: up to head, down to base and
up again, all inside the service's schema (`alembic_version` included), and no drift between
the service's models and what its migrations build."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared import devstack
from tests.conftest import Infra
from tests.support import fetchval

DATABASE = "huifang_migrations"


@pytest.fixture(scope="module")
async def database_url(infra: Infra) -> str:
    """A database beside the suite's, where migrations may go up and down freely."""
    await asyncio.to_thread(devstack.create_database, infra.database_url, DATABASE)
    return devstack.with_database(infra.database_url, DATABASE)


def models_of(service: str) -> tuple[str, MetaData]:
    models = importlib.import_module(f"services.{service}.models")
    schema: str = models.SCHEMA
    metadata: MetaData = models.metadata
    return schema, metadata


def head_of(service: str) -> str | None:
    scripts = ScriptDirectory(str(devstack.ROOT / "services" / service / "migrations"))
    return scripts.get_current_head()


# `devstack.migrate` and `downgrade` run their own event loop: off this one, in a thread.
async def upgrade(database_url: str, service: str) -> None:
    await asyncio.to_thread(devstack.migrate, database_url, service, "head")


async def downgrade(database_url: str, service: str) -> None:
    await asyncio.to_thread(devstack.downgrade, database_url, service, "base")


async def rows_of(database_url: str, sql: str, *args: Any) -> list[str]:
    """The one column `sql` selects, as text, from every row."""
    values = await fetchval(
        database_url,
        "SELECT coalesce(array_agg(v::text), '{}') FROM (" + sql + ") AS q(v)",
        *args,
    )
    return list(values)


async def tables_in(database_url: str, schema: str) -> set[str]:
    sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = $1"
    return set(await rows_of(database_url, sql, schema))


async def version_tables(database_url: str) -> set[str]:
    """The schemas holding an `alembic_version` table."""
    sql = "SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version'"
    return set(await rows_of(database_url, sql))


async def versions_in(database_url: str, schema: str) -> list[str]:
    return await rows_of(database_url, f'SELECT version_num FROM "{schema}".alembic_version')


@pytest.mark.parametrize("service", devstack.SERVICES)
async def test_migrations_go_up_down_and_up_again_inside_the_service_schema(
    database_url: str, service: str
) -> None:
    schema, metadata = models_of(service)
    assert {table.schema for table in metadata.tables.values()} == {schema}
    tables = {table.name for table in metadata.tables.values()}
    head = head_of(service)
    assert tables and head

    await upgrade(database_url, service)
    assert await tables_in(database_url, schema) == tables | {"alembic_version"}
    assert schema in await version_tables(database_url)
    assert "public" not in await version_tables(database_url)
    assert await versions_in(database_url, schema) == [head]

    await downgrade(database_url, service)
    assert await tables_in(database_url, schema) == {"alembic_version"}  # only the bookkeeping
    assert await versions_in(database_url, schema) == []

    await upgrade(database_url, service)
    assert await tables_in(database_url, schema) == tables | {"alembic_version"}
    assert await versions_in(database_url, schema) == [head]


@pytest.mark.parametrize("service", devstack.SERVICES)
async def test_models_have_no_drift_from_migrations(database_url: str, service: str) -> None:
    schema, metadata = models_of(service)
    await upgrade(database_url, service)

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        return type_ != "table" or getattr(obj, "schema", None) == schema

    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "version_table_schema": schema,
                "include_object": include_object,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        return list(compare_metadata(context, metadata))

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []
