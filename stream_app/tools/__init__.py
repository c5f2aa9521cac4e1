"""Event sources and publishing tools behind ``stream-app publish`` and ``stream-app tail``.

``generator`` simulates transactions (Le Borgne et al.'s fraud simulation), ``csv_source`` replays
the fraud-handbook CSV, ``schedule`` merges transactions with their delayed labels into one
time-ordered record stream, and ``producer`` publishes that stream to Kafka.
"""
