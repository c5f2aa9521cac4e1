"""The ``stream-app`` command line. Each command lives in its own module; heavy imports stay inside
the command functions so ``--help`` is instant."""
