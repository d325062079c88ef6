"""`python -m tablebackup`: the same command line as the installed `tablebackup`."""

import sys

from tablebackup.cli.app import main

sys.exit(main())
