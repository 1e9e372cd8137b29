"""``python -m fastreweight.cli``, as ``python -m fastreweight`` (this was a module that ran as a script)."""
import sys

from . import main

sys.exit(main())
