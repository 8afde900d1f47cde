"""A settings object for test_config (loaded by its dotted path)."""
SETTINGS = {"result_expires": 42, "task_default_queue": "from-path"}
