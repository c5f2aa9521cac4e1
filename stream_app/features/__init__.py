"""Feature definitions and per-entity window state (one module serves training, replay, live)."""
