"""``python -m gptimage_async``: the same as the ``gptimage-async`` command."""

from ._cli import main

raise SystemExit(main())
