"""pytest plugin (``pytest -p tests.patch_eventlet``): run the suite in a process
monkey-patched by eventlet before anything else is imported."""
import eventlet

eventlet.monkey_patch()
