"""Sources of events: card transactions (simulated or read from the handbook CSV) and their labels,
merged into one time-ordered record stream and published to Kafka (``stream-app publish``).

``simulator`` simulates card transactions (Le Borgne et al.'s fraud simulation), ``handbook_csv``
reads the fraud-handbook CSV, ``schedule`` merges transactions with their delayed labels into one
time-ordered record stream (and turns labelled transactions into feature-builder columns), and
``producer`` publishes that stream to Kafka.
"""
