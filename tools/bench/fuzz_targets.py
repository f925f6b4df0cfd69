"""Every parser and handler that takes bytes from outside the gate, as fuzz targets.

Shared by the fuzz tests (tests/fuzz/test_fuzz_inputs.py, a small fixed budget) and `egate bench fuzz` (a longer
run, plus a size-doubling cost check). A target's `run(env, data)` calls the real code the way the daemon
does and lets through only what that code documents as its refusal (a result with errors, a
BundleRejected, a ValidationError of a pydantic model, an error reply); anything else is a finding.

Targets and the surface they stand for:
- `mrz`, `bcbp`: document text from a serial reader or OCR;
- `serial`: the serial reader's framing (bytes as they come off the port);
- `chunk`: a `.../bundle/<kind>` MQTT message through the link's chunk handler, chunk 0 authenticated
  against a real trust store;
- `command`: a `.../cmd` message through the ops handler (signed envelope);
- `bundle`: a complete bundle through the verifier;
- `control`: a control-socket request line through the server's dispatcher.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel

MRZ_TD3 = ["P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10"]
BCBP = "M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 100"
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)
SITE, GATE = "fz", "g1"


@dataclass
class FuzzEnv:
    """The real parts the targets drive, built once per run in a temporary folder."""

    link: Any
    ops: Any
    verifier: Any
    control: Any
    reader: Any
    signed_gallery: bytes
    signed_command: bytes


class _EchoReply(BaseModel):
    args: dict[str, Any]


class _OnReply(BaseModel):
    on: bool


@contextmanager
def fuzz_env() -> Iterator[FuzzEnv]:
    import numpy as np

    from egate.drivers.document.serial_reader import SerialDocumentReader
    from egate.edge.gallery.payload import SubjectEntry, encode_gallery_payload
    from egate.edge.gallery.store import GalleryStore
    from egate.edge.lane.control import MaintenanceArgs, strict_args
    from egate.edge.lane.ops import OpsHandler
    from egate.edge.service.control_socket import ControlServer
    from egate.edge.settings.link import LinkConfig, OutboxConfig
    from egate.edge.trust.bundles import (
        BundleScope,
        BundleVerifier,
        CommandPayload,
        GalleryLayout,
        Scope,
        VersionState,
        canonical_json,
        sign_bundle,
    )
    from egate.edge.trust.keys import PublicKeyEntry, TrustStore, key_id_for
    from egate.edge.uplink.link import LinkCredentials, MqttLink
    from egate.edge.uplink.messages import StatusPayload
    from egate.edge.uplink.outbox import Outbox

    with tempfile.TemporaryDirectory(prefix="egate-fuzz-") as tmp:
        root = Path(tmp)
        private = Ed25519PrivateKey.generate()
        raw_pub = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key_id = key_id_for(raw_pub)
        trust = TrustStore(root / "trust")
        trust.install(PublicKeyEntry(key_id=key_id, public_key=base64.b64encode(raw_pub).decode()))
        verifier = BundleVerifier(
            trust, Scope(site=SITE, gate=GATE), "fuzz-model", 1 << 20, VersionState(None), config_validator=None
        )
        gallery = GalleryStore(root / "gallery", bytes(32))
        ops = OpsHandler(verifier, gallery, trust, lambda e: None, config_dir=root / "cfg", clock=lambda: NOW)
        outbox = Outbox(root / "outbox.sqlite", OutboxConfig(), GATE)
        config = LinkConfig(host="127.0.0.1", port=1, tls=False, cert_credential=None, key_credential=None)
        link = MqttLink(
            config,
            SITE,
            GATE,
            outbox,
            lambda: StatusPayload(state="online", site=SITE, gate=GATE),
            LinkCredentials(),
            bundle_dir=root / "incoming",
        )
        ops.attach(link, bytes(32))
        control = ControlServer(
            root / "c.sock",
            None,
            {
                "echo": lambda args: _EchoReply(args=args),
                "maintenance": lambda a: _OnReply(on=strict_args(MaintenanceArgs, a, "m").on),
            },
        )
        reader = SerialDocumentReader("loop://", lambda result: None, today=lambda: date(2026, 12, 1))
        templates = np.ones((2, 8), np.float32) / np.sqrt(8)
        payload = encode_gallery_payload(
            [SubjectEntry("s-1", templates, flights=["LH1"])], model_id="fuzz-model", dim=8
        )
        scope = BundleScope(site=SITE)
        signed_gallery = sign_bundle(
            kind="gallery",
            version=5,
            payload=payload,
            private_key=private,
            key_id=key_id,
            scope=scope,
            issued_at=NOW,
            expires_at=NOW + timedelta(days=1),
            gallery=GalleryLayout(model_id="fuzz-model", dim=8, subject_count=1, template_count=2),
        )
        command = CommandPayload(command_id="c1", name="request_status")
        signed_command = sign_bundle(
            kind="command",
            version=7,
            payload=canonical_json(command.model_dump(mode="json")),
            private_key=private,
            key_id=key_id,
            scope=scope,
            issued_at=NOW,
            expires_at=NOW + timedelta(days=1),
        )
        try:
            yield FuzzEnv(link, ops, verifier, control, reader, signed_gallery, signed_command)
        finally:
            outbox.close()


# ------------------------------------------------------------------------------------------ targets


def _mrz(env: FuzzEnv, data: bytes) -> None:
    from egate.drivers.document import parse_mrz

    result = parse_mrz(data.decode("latin-1"), today=date(2026, 12, 1))
    assert all(e.field and e.message for e in result.errors)


def _bcbp(env: FuzzEnv, data: bytes) -> None:
    from egate.drivers.document import parse_bcbp

    result = parse_bcbp(data.decode("latin-1"))
    assert all(e.field and e.message for e in result.errors)


def _serial(env: FuzzEnv, data: bytes) -> None:
    env.reader._feed(data, 0.0)
    env.reader._feed(b"", 10.0)  # the line-gap timeouts flush what is pending
    assert len(env.reader._buffer) <= env.reader._max_line


def _chunk(env: FuzzEnv, data: bytes) -> None:
    env.link._handle_chunk("gallery", data)  # refusals are acks (not published: the link is offline)


def _command(env: FuzzEnv, data: bytes) -> None:
    ack = env.ops.on_command(data)
    assert ack.status in ("done", "rejected")


def _bundle(env: FuzzEnv, data: bytes) -> None:
    from egate.edge.trust.bundles import BundleRejected

    with suppress(BundleRejected):
        env.verifier.verify(data, NOW)


def _control(env: FuzzEnv, data: bytes) -> None:
    from egate.edge.service.control_socket import ControlFailure, ControlOk

    answer = env.control.dispatch(data)
    assert isinstance(answer, ControlOk | ControlFailure)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[FuzzEnv, bytes], None]
    seeds: Callable[[FuzzEnv], list[bytes]]
    worst_case: Callable[[FuzzEnv, int], bytes]  # an input of about n bytes that is costly for this parser


def _chunk_of(env: FuzzEnv, data: bytes, index: int = 0, chunk_bytes: int = 4096) -> bytes:
    from egate.edge.uplink.messages import BundleChunk

    count = -(-len(data) // chunk_bytes)
    import hashlib

    return (
        BundleChunk.make(
            transfer_id="fz",
            kind="gallery",
            index=index,
            count=count,
            chunk_bytes=chunk_bytes,
            total_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            data=data[index * chunk_bytes : (index + 1) * chunk_bytes],
        )
        .model_dump_json()
        .encode()
    )


TARGETS: dict[str, Target] = {
    "mrz": Target(
        "mrz",
        _mrz,
        lambda env: ["\n".join(MRZ_TD3).encode()],
        lambda env, n: ("\n".join(MRZ_TD3) + "\n").encode() * max(1, n // 90),
    ),
    "bcbp": Target("bcbp", _bcbp, lambda env: [BCBP.encode()], lambda env, n: (BCBP + "FF" * n)[:n].encode()),
    "serial": Target(
        "serial",
        _serial,
        lambda env: [("\r".join(MRZ_TD3) + "\r" + BCBP + "\r").encode()],
        lambda env, n: b"junk\r" * (n // 5),
    ),
    "chunk": Target(
        "chunk",
        _chunk,
        lambda env: [_chunk_of(env, env.signed_gallery), _chunk_of(env, env.signed_gallery, 0, 64)],
        lambda env, n: json.dumps({"v": 1, "transfer_id": "x", "data": "A" * n}).encode(),
    ),
    "command": Target(
        "command",
        _command,
        lambda env: [env.signed_command],
        lambda env, n: env.signed_command + b"\x00" * n,
    ),
    "bundle": Target(
        "bundle",
        _bundle,
        lambda env: [env.signed_gallery],
        lambda env, n: env.signed_gallery + b"\x00" * n,
    ),
    "control": Target(
        "control",
        _control,
        lambda env: [
            b'{"v": 1, "cmd": "echo", "args": {"x": 1}}\n',
            b'{"v": 1, "cmd": "maintenance", "args": {"on": true}}\n',
        ],
        lambda env, n: b'{"v": 1, "cmd": "echo", "args": {"x": "' + b"a" * n + b'"}}\n',
    ),
}


def strategy(target: Target, env: FuzzEnv) -> Any:
    """Hypothesis strategy for `target`: random bytes, mutated valid inputs, and JSON shapes."""
    from hypothesis import strategies as st

    seeds = target.seeds(env)

    def mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
        out = bytearray(seed)
        for pos, cut, insert in edits:
            at = pos % (len(out) + 1)
            out[at : at + cut] = insert
        return bytes(out)

    mutated = st.builds(
        mutate,
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 8), st.binary(max_size=8)), max_size=6),
    )
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
        max_leaves=20,
    )
    as_json = json_values.map(lambda v: json.dumps(v).encode() + b"\n")
    shaped_json = st.fixed_dictionaries(
        {"v": json_values, "cmd": st.sampled_from(["echo", "maintenance", "x"]), "args": json_values}
    ).map(lambda v: json.dumps(v).encode() + b"\n")
    return st.one_of(st.binary(max_size=512), mutated, as_json, shaped_json)
