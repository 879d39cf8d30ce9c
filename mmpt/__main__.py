"""`python -m mmpt` is the `mmpt` console script."""

from mmpt.cli import main

raise SystemExit(main())
