"""The two stages of the worker as plain logic over tables (Faust wiring lives in app.py)."""
