"""credentials can be revoked and accounts disabled: site_clients.revoked_at (and a seq to page by),
sites.disabled_at, users.disabled_at

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing clients are numbered by the identity as the column is added (in no particular order).
    op.add_column("site_clients", sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False))
    op.create_unique_constraint(op.f("uq_site_clients_seq"), "site_clients", ["seq"])
    op.add_column("site_clients", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("sites", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "disabled_at")
    op.drop_column("sites", "disabled_at")
    op.drop_column("site_clients", "revoked_at")
    op.drop_constraint(op.f("uq_site_clients_seq"), "site_clients", type_="unique")
    op.drop_column("site_clients", "seq")
