"""``python -m ouistiti_gw`` is the ``ouistiti-gw`` command."""
from .cli import main

raise SystemExit(main())
