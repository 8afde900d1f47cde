"""``python -m examples.feedhub``: see examples/feedhub/run.py and docs/feedhub.md."""
import sys

from examples.feedhub.run import main

sys.exit(main())
