"""Backups: full and incremental archives of a table, fanned out by key range, and retention."""
