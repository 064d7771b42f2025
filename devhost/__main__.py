"""Entry point of ``python -m devhost``; see ``devhost.cli``."""

from __future__ import annotations

from devhost.cli import main

raise SystemExit(main())
