"""The function app's restore doors (functions.py): parse, call tablebackup.restore, shape the answer."""
