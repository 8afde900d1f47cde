"""pytest plugin (``pytest -p tests.patch_gevent``): run the suite in a process
monkey-patched by gevent before anything else is imported."""
from gevent import monkey

monkey.patch_all()
