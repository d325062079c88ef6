"""What list-backups and GET /api/backups show: each complete backup of a table, newest first, with
why it was taken (its manifest's reason: a safety backup says for which restore or import), its
last recorded verification, and which one `latest` means now, and why."""

from __future__ import annotations

from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError
from tablebackup.core.names import validate_table_name
from tablebackup.repository import catalog
from tablebackup.verify.results import verifications_by_backup


def describe_backups(storage: Storage, table: str) -> dict:
    """{"table", "latest": {"backup", "why"} (backup None and the problem when none can be chosen),
    "backups": [summary + "verification" + "latest"]}."""
    validate_table_name(table)
    summaries = catalog.backup_summaries(storage.backups, table)
    verified = verifications_by_backup(storage, table) if summaries else {}
    try:
        state = catalog.newest_state(storage.backups, table)
        latest = {"backup": state.backup, "why": state.describe()}
    except BackupError as error:
        latest = {"backup": None, "why": str(error)}
    for summary in summaries:
        summary["verification"] = verified.get(summary["backup"])
        summary["latest"] = summary["backup"] == latest["backup"]
    return {"table": table, "latest": latest, "backups": summaries}
