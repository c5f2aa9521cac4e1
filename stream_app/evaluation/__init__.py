"""Model quality: the handbook's metrics and its train/delay/test protocol."""
