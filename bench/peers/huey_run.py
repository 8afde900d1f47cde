"""Run ``huey_consumer`` in a process patched by gevent first (Huey's docs, "Using gevent")."""
from gevent import monkey

monkey.patch_all()

from huey.bin.huey_consumer import consumer_main  # noqa: E402

if __name__ == "__main__":
    consumer_main()
