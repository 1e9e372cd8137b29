"""``python -m fastreweight``: the command line (see ``fastreweight.cli``)."""
import sys

from .cli import main

sys.exit(main())
