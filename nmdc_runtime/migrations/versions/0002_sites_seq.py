"""sites get a seq column, so that GET /sites pages by keyset like every other list

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows are numbered by the identity as the column is added.
    op.add_column("sites", sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False))
    op.create_unique_constraint(op.f("uq_sites_seq"), "sites", ["seq"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_sites_seq"), "sites", type_="unique")
    op.drop_column("sites", "seq")
