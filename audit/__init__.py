"""The function app's audit doors (functions.py): parse, call tablebackup.audit, shape the answer."""
