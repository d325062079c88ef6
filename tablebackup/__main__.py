"""`python -m tablebackup`: the same command line as the installed `tablebackup`."""

import sys

from tablebackup.cli.launch import entry

sys.exit(entry())
