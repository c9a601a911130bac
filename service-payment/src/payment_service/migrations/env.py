"""Alembic environment: the chassis runner applies this service's revisions."""

from chassis.migrations import run_env

run_env()
