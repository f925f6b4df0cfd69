"""A stand-in for the daemon's link side, run as a real process so tests can SIGKILL it.

`python -m tests.link.link_gate_proc --state DIR --port P [--append N]` opens the outbox in DIR, starts the
MqttLink, appends N outcomes (each committed before the next), prints JSON lines on stdout
(`{"event": "appended", "n": N}`, `{"event": "connected"}`) and runs until SIGTERM (clean close:
retained `stopped`) or SIGKILL (the broker publishes the `offline` will).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from egate.edge.service.logs import configure_logging
from egate.edge.settings.link import LinkConfig, OutboxConfig
from egate.edge.uplink.link import LinkCredentials, MqttLink
from egate.edge.uplink.messages import StatusPayload
from egate.edge.uplink.outbox import Outbox


def _say(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--site", default="site-a")
    parser.add_argument("--gate", default="gate-07")
    parser.add_argument("--append", type=int, default=0)
    parser.add_argument("--keepalive", type=int, default=5)
    parser.add_argument("--max-inflight", type=int, default=20)
    args = parser.parse_args()
    # Logs (JSON) to stderr, which the test keeps in a file and shows when something goes wrong.
    configure_logging(gate_id=args.gate, level="debug", fmt="json", stream=sys.stderr)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    outbox = Outbox(args.state / "outbox.sqlite", OutboxConfig(), args.gate)
    config = LinkConfig(
        host=args.host,
        port=args.port,
        tls=False,
        cert_credential=None,
        key_credential=None,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
        keepalive_s=args.keepalive,
        max_inflight=args.max_inflight,
    )

    def status() -> StatusPayload:
        return StatusPayload(state="online", site=args.site, gate=args.gate, mode="exit")

    link = MqttLink(config, args.site, args.gate, outbox, status, LinkCredentials())
    link.start()
    for i in range(args.append):
        outbox.append("outcome", {"n": i, "decision": "pass"})
    _say("appended", n=args.append, depth=outbox.depth())
    while not stop.is_set():
        if link.wait_connected(0.2):
            _say("connected")
            break
    stop.wait()
    link.close(clean=True)
    outbox.close()
    _say("stopped")


if __name__ == "__main__":
    main()
