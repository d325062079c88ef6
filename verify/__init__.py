"""The function app's verify doors (functions.py): parse, call tablebackup.verify, shape the answer."""
