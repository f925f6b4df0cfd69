"""The gate side of `egate bench chunks`: the real link and ops handler in their own process.

`python -m egate.tools.bench.chunks_gate --state DIR --port P --trust-key PUB_B64` opens an outbox, a trust store
holding the given ops key, a gallery store, the bundle verifier and `egate.edge.lane.ops.OpsHandler`, wires them
to `egate.edge.uplink.link.MqttLink` the way the daemon does, prints `{"event": "connected"}` and runs until SIGTERM.
Logs go to stderr (JSON lines), which the bench keeps to measure what a flood writes to the journal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from egate.edge.gallery.store import GalleryStore
from egate.edge.lane.ops import OpsHandler
from egate.edge.service.logs import configure_logging
from egate.edge.settings.link import LinkConfig, OutboxConfig
from egate.edge.trust.bundles import BundleVerifier, Scope, VersionState
from egate.edge.trust.keys import PublicKeyEntry, TrustStore, key_id_for
from egate.edge.uplink.link import LinkCredentials, MqttLink
from egate.edge.uplink.messages import StatusPayload
from egate.edge.uplink.outbox import Outbox


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--site", default="bench-site")
    parser.add_argument("--gate", default="bench-gate")
    parser.add_argument("--trust-key", required=True, help="Base64 raw Ed25519 public key of ops.")
    args = parser.parse_args()
    configure_logging(gate_id=args.gate, level="info", fmt="json", stream=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    import base64

    raw_pub = base64.b64decode(args.trust_key)
    trust = TrustStore(args.state / "trust")
    trust.install(PublicKeyEntry(key_id=key_id_for(raw_pub), public_key=args.trust_key))
    gallery_key = os.urandom(32)
    gallery = GalleryStore(args.state / "gallery", gallery_key)
    verifier = BundleVerifier(
        trust,
        Scope(site=args.site, gate=args.gate),
        "bench-model",
        256 * 1024 * 1024,
        VersionState(args.state / "bundle-versions.json"),
        config_validator=None,
    )
    ops = OpsHandler(verifier, gallery, trust, lambda event: None, config_dir=args.state / "config")
    outbox = Outbox(args.state / "outbox.sqlite", OutboxConfig(), args.gate)
    config = LinkConfig(host="127.0.0.1", port=args.port, tls=False, cert_credential=None, key_credential=None)

    def status() -> StatusPayload:
        return StatusPayload(state="online", site=args.site, gate=args.gate, mode="exit")

    link = MqttLink(
        config,
        args.site,
        args.gate,
        outbox,
        status,
        LinkCredentials(),
        bundle_dir=args.state / "bundles-incoming",
    )
    wire = getattr(ops, "attach", None)
    if wire is not None:  # the daemon's wiring, where this build has it (early authentication, at-rest key)
        wire(link, gallery_key)
    else:
        link.set_bundle_handler(ops.on_bundle)  # type: ignore[arg-type]
        link.set_command_handler(ops.on_command)
    link.start()
    while not stop.is_set():
        if link.wait_connected(0.2):
            sys.stdout.write(json.dumps({"event": "connected", "pid": os.getpid()}) + "\n")
            sys.stdout.flush()
            break
    stop.wait()
    link.close(clean=True)
    outbox.close()


if __name__ == "__main__":
    main()
