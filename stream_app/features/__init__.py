"""Feature definitions and per-entity window state: one module serves training, the offline
evaluations and the live worker."""
