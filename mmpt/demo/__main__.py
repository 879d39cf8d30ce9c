"""`python -m mmpt.demo` = `mmpt demo`."""

from mmpt.demo.stages import main

raise SystemExit(main())
