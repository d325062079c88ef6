"""Restores: a backup chain or a point in time back into a table, queued operations, undelete."""
