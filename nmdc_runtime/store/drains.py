"""Sites' judged endings (`site_endings`): their fault streaks, what drains them, an undrain, and the pruning.

The trigger of migration 0013 appends a row as each operation ends with a fault or a success
(`domain.drains.ending_kind`); an undrain appends one too. A site's streak (`store.rules.fault_streak`) is what
follows its last row that is not a fault, so everything before that row can go (`prune_endings`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nmdc_runtime.models import Site, SiteEnding
from nmdc_runtime.store.rules import fault_streak, site_drained

Streak = list[tuple[str, datetime]]
"""A site's faults since its last success or undrain, oldest first: (operation id, ended at)."""


def streak_of(value: list[list[str]] | None) -> Streak:
    """A streak as `rules.fault_streak` gives it (JSON: `[[operation id, ended at], ...]`, or NULL)."""
    return [(op_id, datetime.fromisoformat(ended_at)) for op_id, ended_at in value or ()]


def fault_streaks(session: Session, *, site_ids: Iterable[str], drain_after: int) -> dict[str, Streak]:
    """The first `drain_after` faults of each named site's streak, by site id (unknown sites left out)."""
    wanted = sorted(set(site_ids))
    if not wanted:
        return {}
    rows = session.execute(
        sa.select(Site.id, fault_streak(Site.id, drain_after)).where(Site.id.in_(wanted))
    ).all()
    return {site_id: streak_of(value) for site_id, value in rows}


def drained_sites(session: Session, *, drain_after: int) -> dict[str, Streak]:
    """Every drained site (`rules.site_drained`) with the faults that drained it, by site id, in id order."""
    rows = session.execute(
        sa.select(Site.id, fault_streak(Site.id, drain_after))
        .where(site_drained(Site.id, drain_after))
        .order_by(Site.id)
    ).all()
    return {site_id: streak_of(value) for site_id, value in rows}


def note_undrain(session: Session, *, site_id: str, now: datetime) -> None:
    """Lift a site's drain: a row that ends its streak, so only operations that end after it count."""
    session.execute(sa.insert(SiteEnding).values(site_id=site_id, fault=False, ended_at=now))


_LAST_RESETS = (
    sa.select(SiteEnding.site_id, sa.func.max(SiteEnding.seq).label("seq"))
    .where(sa.not_(SiteEnding.fault))
    .group_by(SiteEnding.site_id)
    .subquery("last_resets")
)
_PRUNE = (
    sa.delete(SiteEnding)
    .where(SiteEnding.site_id == _LAST_RESETS.c.site_id, SiteEnding.seq < _LAST_RESETS.c.seq)
    .execution_options(synchronize_session=False)
)


def prune_endings(session: Session) -> int:
    """Delete each site's rows before its last success or undrain, which no streak reads any more; how many.

    Rows are only ever appended and deleted, so this waits on no transaction that ends an operation."""
    return session.execute(_PRUNE).rowcount or 0
