"""stream_app: streaming fraud scoring on Kafka with Faust.

Event flow, one package per stage:
``io`` (topics, codecs, schemas, dead letters) → ``features`` (windowed entity state)
→ ``scoring`` (model registry, envelope) → ``outputs`` (scores, shadow, drift) → ``app`` (the
worker). Beside it: ``monitoring`` (drift, the scorecard), ``evaluation`` (offline model quality),
``sources`` (events in), ``training``, ``operations`` (top, topic growth) and ``devtools``, all
behind the ``stream-app`` CLI.
"""

__version__ = "0.1.0"
