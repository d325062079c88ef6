"""The function app's backup doors (functions.py): parse, call tablebackup.backup, shape the answer."""
