"""Verification: the checker that reads a backup whole, drills that restore it, and their results."""
