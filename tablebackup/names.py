"""Validation of the names users pass in: tables and backup ids."""

from __future__ import annotations

import re

from tablebackup.errors import InvalidInput

# Azure Tables: 3-63 alphanumerics starting with a letter; "tables" is reserved.
_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
# <table>-<UTC yyyymmddThhmmss.ffffff>Z, e.g. candidates-20261125T020000.123456Z
BACKUP_ID_RE = re.compile(r"^(?P<table>[A-Za-z][A-Za-z0-9]{2,62})-(?P<stamp>\d{8}T\d{6}\.\d{6}Z)$")


def validate_table_name(name: str) -> str:
    if not isinstance(name, str) or not _TABLE_RE.match(name) or name.lower() == "tables":
        raise InvalidInput(f"invalid table name {name!r}: use 3-63 letters and digits, starting with a letter")
    return name


def validate_backup_id(backup_id: str) -> str:
    if not isinstance(backup_id, str) or not BACKUP_ID_RE.match(backup_id):
        raise InvalidInput(f"invalid backup id {backup_id!r}: expected <table>-<yyyymmddThhmmss.ffffff>Z")
    return backup_id
