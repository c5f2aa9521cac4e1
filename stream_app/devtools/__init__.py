"""Developer helpers: the demo's story (``stream-app demo``) and a worker run as a child process
(the demo, the benchmarks and the tests start workers with it)."""
