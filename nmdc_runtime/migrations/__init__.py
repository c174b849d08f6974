"""Alembic migrations of the runtime schema, applied with `nmdc-runtime db upgrade`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent


def alembic_config(url: str) -> Config:
    """An Alembic config for the runtime database at `url` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # ConfigParser interpolation would eat the % of URL-encoded passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the runtime database at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)
