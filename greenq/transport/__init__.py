"""kombu transports tuned for greenq (subclasses; the wire layout is kombu's)."""
