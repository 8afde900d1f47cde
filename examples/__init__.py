"""Example applications; run them from the repository root (``python -m examples.feedhub``)."""
