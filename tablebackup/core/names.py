r"""Validation of the names users pass in: tables, backup ids and blob names. Every pattern matches
the whole string (`\Z`, not `$`, which also matches before a final newline)."""

from __future__ import annotations

import re

from tablebackup.core.errors import InvalidInput

# Azure Tables: 3-63 alphanumerics starting with a letter; "tables" is reserved.
_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}\Z")
# <table>-<UTC yyyymmddThhmmss.ffffff>Z, e.g. candidates-20261125T020000.123456Z
BACKUP_ID_RE = re.compile(r"^(?P<table>[A-Za-z][A-Za-z0-9]{2,62})-(?P<stamp>[0-9]{8}T[0-9]{6}\.[0-9]{6}Z)\Z")


def table_key(name: str) -> str:
    """The one spelling under which a table's name keys anything the app writes (backup ids, the
    erasure register, run records, drills, verifications): Azure's table names are
    case-insensitive, so `Orders` and `orders` are one table. Lookups still match any spelling,
    for what was written before."""
    return name.lower()


def validate_table_name(name: str) -> str:
    if not isinstance(name, str) or not _TABLE_RE.match(name) or name.lower() == "tables":
        raise InvalidInput(f"invalid table name {name!r}: use 3-63 letters and digits, starting with a letter")
    return name


def validate_backup_id(backup_id: str) -> str:
    if not isinstance(backup_id, str) or not BACKUP_ID_RE.match(backup_id):
        raise InvalidInput(f"invalid backup id {backup_id!r}: expected <table>-<yyyymmddThhmmss.ffffff>Z")
    return backup_id


# A URL scheme (https://...) or a network path (//host/...): a name must never leave its container.
_URL_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//")
_BLOB_NAME_MAX = 1024


def validate_blob_name(name: str) -> str:
    """A blob name that resolves inside its container: relative, no `.` or `..` segment, no
    backslash, no percent-encoding, no URL, no control character."""
    if not isinstance(name, str) or not name or len(name) > _BLOB_NAME_MAX:
        raise InvalidInput(f"invalid blob name {name!r}: give 1-{_BLOB_NAME_MAX} characters")
    problem = None
    if _URL_RE.match(name):
        problem = "a URL or network path; give the name of a blob in the container"
    elif name.startswith("/"):
        problem = "it starts with '/'; give the name relative to the container"
    elif "\\" in name:
        problem = "it holds a backslash"
    elif "%" in name:
        problem = "it holds '%' (percent-encoding is not decoded; give the name as it is)"
    elif any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in name) or "?" in name or "#" in name:
        problem = "it holds a control character, '?' or '#'"
    elif any(segment in ("", ".", "..") for segment in name.split("/")):
        problem = "it has an empty, '.' or '..' path segment"
    if problem:
        raise InvalidInput(f"invalid blob name {name!r}: {problem}")
    return name
