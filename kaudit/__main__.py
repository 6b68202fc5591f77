"""Allow ``python -m kaudit``."""

from kaudit._cli import main

raise SystemExit(main())
