"""Alembic environment for the users database: the chassis runs it under an advisory lock."""

from chassis.migrations import run_env

run_env()
