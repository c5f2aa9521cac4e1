"""Model registry (hash-verified), micro-batch scoring and the score envelope."""
