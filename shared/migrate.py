"""`python -m shared.migrate <service> [...]`: run services' Alembic migrations to head
against DATABASE_URL (used by the compose `migrate` job and the Kubernetes Job)."""

from __future__ import annotations

import sys

from shared.devstack import SERVICES, migrate
from shared.settings import ServiceSettings


def main(argv: list[str]) -> None:
    services = argv or list(SERVICES)
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        raise SystemExit(f"unknown service(s): {', '.join(unknown)}")
    database_url = ServiceSettings().database_url
    for service in services:
        migrate(database_url, service)
        print(f"{service}: migrated to head")


if __name__ == "__main__":
    main(sys.argv[1:])
