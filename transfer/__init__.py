"""The function app's transfer doors (functions.py): parse, call tablebackup.transfer, shape the answer."""
