"""Which table a restore or an import may write into.

An empty target is a mistake (an unset shell variable), never a request for the default. The app's
own tables (audit trail, erasure register, run records, ...) are refused: a mirror into the erasure
register would bring erased people back, one into the audit table would delete entries promised
never to be deleted. Restoring one of them from its own backup is legitimate, so it is allowed
behind an explicit option, and then only in a mode that deletes nothing.

The table may be in another storage account (tablebackup.core.accounts): the same tables are refused
there, and only the table side moves; the audit trail, the erasure register and the app's records
stay in the app's own account.
"""

from __future__ import annotations

from tablebackup.core.accounts import TargetAccount, parse_target_account
from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput
from tablebackup.core.names import validate_table_name
from tablebackup.core.settings import Settings

# A point-in-time restore replays the data account's audit trail: when a whole account is replaced,
# that trail is unreachable (an outage) or was written by the attacker (an incident).
REPLAY_INTO_ANOTHER_ACCOUNT = (
    "a point-in-time restore (replaying the audit trail) writes into the data account only: the trail it "
    "replays is that account's; into another account, restore the newest backup as of the instant, without the replay"
)

# Modes that write without deleting anything.
ADDITIVE_MODES = ("replace", "merge", "missing")


def app_tables(settings: Settings) -> dict[str, str]:
    """The app's own tables, lowercased (table names are case-insensitive), by setting name."""
    return {
        "AUDIT_TABLE": settings.audit_table.lower(),
        "AUDIT_REJECTED_TABLE": settings.audit_rejected_table.lower(),
        "ERASURES_TABLE": settings.erasures_table.lower(),
        "BACKUP_RUNS_TABLE": settings.backup_runs_table.lower(),
        "VERIFICATIONS_TABLE": settings.verifications_table.lower(),
        "DRILLS_TABLE": settings.drills_table.lower(),
        "RESTORE_OPERATIONS_TABLE": settings.restore_operations_table.lower(),
    }


def check_target_given(target: str | None, what: str = "target") -> None:
    """None means "not given"; an empty or blank string is refused, never taken as the default."""
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise InvalidInput(f"the {what} is empty: give a table name, or leave the {what} out")


def resolve_target(
    settings: Settings,
    table: str,
    target: str | None,
    *,
    mode: str,
    allow_app_table: bool = False,
    what: str = "target",
) -> str:
    """The table to write into: `target`, else `table`. Refuses an empty target and the app's own
    tables (unless allow_app_table, and then only in a mode that deletes nothing)."""
    check_target_given(target, what)
    chosen = validate_table_name(target if target is not None else table)
    setting = next((name for name, value in app_tables(settings).items() if value == chosen.lower()), None)
    if setting is None:
        return chosen
    if not allow_app_table:
        raise InvalidInput(
            f"table {chosen!r} is the app's own {setting}: it is refused as a {what} "
            "(allow it explicitly, in a mode that deletes nothing, to restore it from its own backup)"
        )
    if mode not in ADDITIVE_MODES:
        raise InvalidInput(
            f"table {chosen!r} is the app's own {setting}: it is only written without deletions "
            f"(mode {' / '.join(ADDITIVE_MODES)}), never with mode {mode!r}"
        )
    return chosen


def in_target_account(storage: Storage, target_account: str | None) -> tuple[Storage, TargetAccount | None]:
    """The storage whose tables a restore or an import writes into, and the other account it is
    (None: the data account itself, also when the target account names it again)."""
    if target_account is None:
        return storage, None
    account = parse_target_account(target_account)
    data = storage.in_account(account)
    return data, (None if data is storage else account)
