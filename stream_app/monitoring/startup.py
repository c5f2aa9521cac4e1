"""Before Faust starts: wait for Kafka, and say so on the worker's web port.

A worker started while its broker is down (a rolling restart of the cluster, a worker scheduled
before Kafka is up) must not exit and must not lose anything: it waits, retrying with a backoff,
and answers probes meanwhile: ``/healthz`` 200 (the process is fine; do not restart it) and
``/readyz`` 503 with why (``checks.kafka``), in the same JSON shape as the running worker's
(:mod:`stream_app.monitoring.health`). Faust's own web server takes the port once Kafka answers.
Refused credentials or an untrusted certificate do not pass by waiting: those still end the
worker at once (exit 2) with the setting to fix.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from stream_app.config import Settings
from stream_app.exceptions import KafkaUnreachable
from stream_app.io.security import check_access

log = logging.getLogger("stream_app.worker")

MAX_BACKOFF_S = 30.0


class StartupProbe:
    """``/healthz`` 200 and ``/readyz`` 503 (with :attr:`detail`) on ``bind:port``, in a thread."""

    def __init__(self, bind: str, port: int) -> None:
        self.detail = "starting"
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, Any]
                if self.path.startswith("/healthz"):
                    status, body = 200, {"status": "ok", "starting": probe.detail}
                elif self.path.startswith("/readyz"):
                    check = {"ok": False, "detail": probe.detail}
                    status, body = (
                        503,
                        {"ready": False, "failing": ["kafka"], "checks": {"kafka": check}},
                    )
                else:
                    status, body = 404, {"error": "the worker is starting: only /healthz, /readyz"}
                payload = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes every few seconds: not worth a log line each

        self.server = ThreadingHTTPServer((bind, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="startup-probe")
        self.thread.daemon = True
        self.thread.start()

    def close(self) -> None:
        """Free the port (for Faust's web server)."""
        self.server.shutdown()
        self.server.server_close()


def wait_for_kafka(
    settings: Settings,
    *,
    check: Callable[[Settings], object] = check_access,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = log.warning,
) -> int:
    """Return once Kafka answers ``check``; the attempts that failed (0: it answered at once).
    While waiting, :class:`StartupProbe` answers on the web port (when the web server is on)
    and ``say`` tells each attempt (before Faust starts, the worker's log is its stderr)."""
    probe: StartupProbe | None = None
    failed = 0
    backoff = 1.0
    try:
        while True:
            try:
                check(settings)
            except KafkaUnreachable as exc:
                failed += 1
                if probe is None and settings.web_enabled:
                    probe = StartupProbe(settings.web_bind, settings.web_port)
                if probe is not None:
                    probe.detail = f"waiting for Kafka (attempt {failed}): {exc}"
                say(
                    f"waiting for Kafka (attempt {failed}, next in {backoff:.0f} s; /readyz "
                    f"answers 503 meanwhile): {exc}"
                )
                sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if failed:
                say(f"Kafka answered after {failed} failed attempt(s): starting")
            return failed
    finally:
        if probe is not None:
            probe.close()
