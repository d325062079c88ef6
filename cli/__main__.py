"""`python -m cli`: the ops command line."""

import sys

from cli.app import main

sys.exit(main())
