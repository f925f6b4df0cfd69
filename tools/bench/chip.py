"""`egate bench chip`: time a full chip read (access control, DG1, DG2, EF.SOD, EF.COM, Passive
Authentication) through the real PC/SC stack against the virtual ePassport, per step: APDUs, bytes,
seconds; and the share a real contactless link at 424 kbit/s would spend moving those bytes.

    egate bench chip [--runs 3] [--dg2-kb 20] [--json]

Starts its own pcscd (root; one already running is used as it is) and puts the virtual card on
"Virtual PCD 00 00". Each APDU through pcscd + vpcd costs a loopback round trip, which stands in
for a real chip's per-command processing time; the transfer share is computed from bytes.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timezone
from typing import Any

import typer

LINK_BITS_PER_S = 424_000  # ISO/IEC 14443 high bit rate most ePassports and readers negotiate
GOAL_S = 2.5


def _variants() -> list[tuple[str, int | None, bool, bool]]:
    # (name, PACE parameter id or None for BAC, extended length, Chip Authentication with DG14)
    return [
        ("pace-brainpoolP256r1-extended", 13, True, False),
        ("pace-brainpoolP256r1-extended-ca", 13, True, True),
        ("pace-secp256r1-extended", 12, True, False),
        ("bac-extended", None, True, False),
        ("bac-short", None, False, False),
    ]


def run_bench(runs: int, dg2_bytes: int) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ec

    from egate.drivers.chip.pa import TrustList
    from egate.drivers.chip.pcsc import PcscTransport, wait_for_card
    from egate.drivers.chip.reader import read_document
    from egate.tools.sim.chip.card import PassportCard
    from egate.tools.sim.chip.passport import ID_CA_ECDH_AES_128, build_passport, dg14, make_pki, synthetic_face
    from egate.tools.sim.chip.pcscd import Pcscd
    from egate.tools.sim.chip.vpcd import VpcdCard

    now = datetime.now(timezone.utc)
    pki = make_pki(now)
    face, size = synthetic_face(dg2_bytes)
    trust = TrustList.from_der([pki.csca_der()])
    reader = "Virtual PCD 00 00"
    out: dict[str, Any] = {
        "runs": runs,
        "dg2_image_bytes": len(face),
        "link_bits_per_s": LINK_BITS_PER_S,
        "variants": {},
    }
    with Pcscd():
        ca_key = ec.generate_private_key(ec.BrainpoolP256R1())
        for name, param, extended, with_ca in _variants():
            groups = {14: dg14(ca_key.public_key())} if with_ca else None
            chip = build_passport(pki, face, size, pace_parameter_id=param, extra_groups=groups)
            totals: list[float] = []
            steps: dict[str, list[dict[str, float]]] = {}
            protocol = None
            for _ in range(runs):
                card = PassportCard(
                    dict(chip.files),
                    chip.key.mrz_information(),
                    extended_length=extended,
                    ca_private_key=ca_key if with_ca else None,
                    ca_oid=ID_CA_ECDH_AES_128 if with_ca else None,
                )
                with VpcdCard(card):
                    transport = PcscTransport.open(reader, timeout_s=10.0)
                    start = time.perf_counter()
                    result = read_document(transport, chip.key, trust, now, atr=transport.atr)
                    totals.append(time.perf_counter() - start)
                    transport.close()
                wait_for_card(reader, present=False, timeout_s=10.0)
                if not result.authentic or (with_ca and result.chip_authentication != "done"):
                    raise RuntimeError(f"{name}: read failed: {result.reason} {result.detail}")
                protocol = result.access_protocol
                for t in result.timings:
                    steps.setdefault(t.step, []).append(
                        {"s": t.seconds, "apdus": t.apdus, "bytes": t.bytes_out + t.bytes_in}
                    )
            step_table = {}
            apdus = bytes_total = 0
            for step, samples in steps.items():
                a, b = int(samples[0]["apdus"]), int(samples[0]["bytes"])
                apdus += a
                bytes_total += b
                median_s = statistics.median(s["s"] for s in samples)
                step_table[step] = {
                    "apdus": a,
                    "bytes": b,
                    "median_s": round(median_s, 4),
                    "per_apdu_ms": round(1000 * median_s / a, 2) if a else None,
                    "transfer_s_at_424k": round(b * 8 / LINK_BITS_PER_S, 4),
                }
            median_total = statistics.median(totals)
            transfer = bytes_total * 8 / LINK_BITS_PER_S
            out["variants"][name] = {
                "protocol": protocol,
                "apdus": apdus,
                "bytes": bytes_total,
                "median_total_s": round(median_total, 3),
                "transfer_s_at_424k": round(transfer, 3),
                "transfer_share_of_measured": round(transfer / median_total, 3),
                "virtual_ms_per_apdu": round(1000 * median_total / apdus, 2),
                # A real read = bytes on the 424 kbit/s link + per-command cost (taken from the virtual card).
                "estimate_real_s": round(median_total + transfer, 3),
                "within_goal": median_total + transfer <= GOAL_S,
                "steps": step_table,
            }
    return out


def chip_command(
    runs: int = typer.Option(3, "--runs", min=1, max=50, help="Reads per variant."),
    dg2_kb: int = typer.Option(20, "--dg2-kb", min=1, max=200, help="Face image size in DG2 (KB)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Time a chip read per step on the virtual ePassport through pcscd."""
    result = run_bench(runs, dg2_kb * 1000)
    if json_out:
        typer.echo(json.dumps(result))
        return
    for name, v in result["variants"].items():
        typer.echo(
            f"{name:32s} {v['protocol']:38s} {v['apdus']:4d} APDUs {v['bytes']:6d} B  measured {v['median_total_s']:.3f} s"
            f"  424k transfer {v['transfer_s_at_424k']:.3f} s  estimate {v['estimate_real_s']:.3f} s"
        )
        for step, s in v["steps"].items():
            typer.echo(f"    {step:6s} {s['apdus']:4d} APDUs {s['bytes']:6d} B {s['median_s']:.3f} s")


def register(app: typer.Typer) -> None:
    """Add `chip` to the `bench` group."""
    app.command("chip")(chip_command)
