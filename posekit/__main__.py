"""``python -m posekit`` (and ``torchrun -m posekit``): the command line."""
from posekit.cli import main

raise SystemExit(main())
