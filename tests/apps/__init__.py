"""Apps the tests start workers with.  Configured from the environment
(GREENQ_BROKER_URL, GREENQ_RESULT_BACKEND, GREENQ_HOME, GREENQ_TEST_QUEUE) so
that the worker subprocess and the test process agree."""
