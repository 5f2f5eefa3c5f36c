"""python -m windtunnel.cli: the `windtunnel` command."""
import sys

from . import main

sys.exit(main())
