"""The verdicts and their thresholds: protected, at risk, unprotected, each with a one-line reason.

"The newest backup" is the one a restore of `latest` would use (tablebackup.repository.catalog:
never a safety backup; after an unfiltered mirror restore in place, the backup restored, whose age
then counts from the restore's end), and "its verification" is the newest verification recorded of
that very backup (verifying an older one hides nothing).

Unprotected (any of): no complete backup; the newest backup is older than BACKUP_MAX_AGE_HOURS (the
RPO); its incremental chain is broken; its last verification failed; the last drill of a kind
(entity or full) failed.
At risk (any of, when not unprotected): the newest backup is older than RPO_WARNING of the RPO; the
newest backup's manifest is refused and an older backup is the newest usable; the newest backup
attempt failed or was abandoned; the table was restored in place after its newest regular backup
started (take a backup); no verification recorded of the newest backup, or none within the RPO; its
last verification passed with warnings; no drill recorded, or none in DRILL_MAX_AGE_DAYS; the newest
drill restored in more than RTO_WARNING of RTO_MINUTES.
Protected otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

PROTECTED, AT_RISK, UNPROTECTED = "protected", "at risk", "unprotected"
VERDICTS = (PROTECTED, AT_RISK, UNPROTECTED)  # from best to worst

RPO_WARNING = 0.8  # at risk once the newest complete backup is this share of the RPO old
RTO_WARNING = 0.8  # at risk once the newest drill's restore took this share of the RTO
DRILL_MAX_AGE_DAYS = 45  # drills run monthly: a month and a half without one means they stopped


@dataclass(frozen=True)
class Finding:
    verdict: str
    reason: str


def worst(verdicts: list[str]) -> str:
    return max(verdicts, key=VERDICTS.index, default=PROTECTED)


def ago(now: datetime, at: datetime) -> str:
    """`35 min ago`, `5.2 h ago`, `3 d ago`."""
    seconds = max((now - at).total_seconds(), 0)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def thresholds(rpo_hours: float, rto_minutes: float) -> dict:
    """The thresholds in force, as the JSON and the page show them."""
    return {
        "rpo_hours": rpo_hours,
        "at_risk_after_hours": round(rpo_hours * RPO_WARNING, 2),
        "rto_minutes": rto_minutes,
        "at_risk_restore_minutes": round(rto_minutes * RTO_WARNING, 2),
        "drill_max_age_days": DRILL_MAX_AGE_DAYS,
    }
