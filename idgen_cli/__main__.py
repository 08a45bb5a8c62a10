"""``python -m idgen_cli``: the same as the ``idgen`` command."""
import sys

from idgen_cli.main import main

sys.exit(main())
