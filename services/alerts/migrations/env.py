from services.alerts.models import SCHEMA, metadata
from shared.alembic_env import run_migrations

run_migrations(SCHEMA, metadata)
