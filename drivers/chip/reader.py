"""One chip read, start to end: access control (PACE when EF.CardAccess offers it, BAC otherwise,
ICAO Doc 9303 part 11 §4.2), DG1 and DG2 first so the face comparison can start, then EF.SOD, EF.COM
and DG14/DG15, then Passive Authentication. Every failure becomes one `ChipFailure`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar

import structlog

from egate.drivers.chip.aa import ActiveAuthenticationFailed, parse_dg15, perform_aa
from egate.drivers.chip.access import AccessDenied, AccessKey, RandomSource, perform_bac
from egate.drivers.chip.apdu import CardStatusError, Channel, ChipIOError, Transport
from egate.drivers.chip.ca import CaInfo, CaPublicKey, ChipAuthenticationError, parse_dg14, perform_ca
from egate.drivers.chip.lds import (
    DATA_GROUPS,
    EF_CARD_ACCESS,
    EF_COM,
    EF_SOD,
    EMRTD_AID,
    MAX_FILE_BYTES,
    FaceImage,
    LdsError,
    parse_dg1,
    parse_dg2,
    parse_ef_com,
)
from egate.drivers.chip.models import ChipFailure, ChipResult, StepTiming
from egate.drivers.chip.pa import PaError, TrustList, parse_sod, passive_authentication
from egate.drivers.chip.pace import KeySource, PaceError, choose, parse_card_access, perform_pace, random_scalar
from egate.drivers.chip.sm import SecureMessagingError
from egate.drivers.chip.tlv import TlvError, read_header

log = structlog.get_logger(__name__)
T = TypeVar("T")

SHORT_CHUNK = 0xDF  # 223: the protected answer (cryptogram + DO'99' + DO'8E') still fits 256 bytes
EXTENDED_CHUNK = 4000  # protected answer stays under 4 KB, within common reader/chip buffers


@dataclass(frozen=True)
class ChipReadOptions:
    extended_length: Literal["auto", "on", "off"] = "auto"
    extended_chunk: int = EXTENDED_CHUNK
    try_pace: bool = True


def atr_supports_extended_length(atr: bytes) -> bool:
    """Card capabilities (compact-TLV 73, ISO 7816-4 §8.1.1.2.7) third byte bit 7: extended Lc/Le."""
    if len(atr) < 2:
        return False
    t0 = atr[1]
    pos = 2
    ty = t0
    k = t0 & 0x0F
    while True:
        pos += bin(ty & 0xF0).count("1")
        if ty & 0x80 and pos - 1 < len(atr):
            ty = atr[pos - 1]
            if not ty & 0xF0:
                break
            continue
        break
    hist = atr[pos : pos + k]
    if not hist or hist[0] != 0x80:
        return False
    i = 1
    while i < len(hist):
        tag, length = hist[i] >> 4, hist[i] & 0x0F
        value = hist[i + 1 : i + 1 + length]
        if tag == 0x7 and length >= 3:
            return bool(value[2] & 0x40)
        i += 1 + length
    return False


class _Steps:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.timings: list[StepTiming] = []

    def run(self, name: str, fn: Callable[[], T]) -> T:
        before = self.channel.counters.snapshot()
        start = time.perf_counter()
        try:
            return fn()
        finally:
            diff = self.channel.counters.since(before)
            self.timings.append(
                StepTiming(name, time.perf_counter() - start, diff.apdus, diff.bytes_out, diff.bytes_in)
            )


def read_file(channel: Channel, fid: int, chunk: int) -> bytes:
    """SELECT then READ BINARY in chunks; the first chunk's TLV header says how long the file is."""
    channel.select_file(fid)
    first = channel.read_binary(0, chunk)
    try:
        _tag, _constructed, length, pos = read_header(first)
    except TlvError as exc:
        raise LdsError(f"file {fid:04X} does not start with a TLV header: {exc}") from None
    total = pos + length
    if total > MAX_FILE_BYTES:
        raise LdsError(f"file {fid:04X} claims {total} bytes (limit {MAX_FILE_BYTES})")
    data = bytearray(first[:total])
    while len(data) < total:
        part = channel.read_binary(len(data), min(chunk, total - len(data)))
        if not part:
            raise LdsError(f"file {fid:04X} ended at {len(data)} of {total} bytes")
        data += part[: total - len(data)]
    return bytes(data)


def _chip_authentication(
    channel: Channel, chosen: tuple[CaInfo, CaPublicKey], key_source: KeySource, chunk: int
) -> None:
    """CA, then one protected read under the new keys: only the genuine chip can answer it."""
    try:
        channel.sm = perform_ca(channel, chosen[0], chosen[1], key_source)
        read_file(channel, EF_COM, chunk)
    except (SecureMessagingError, CardStatusError, LdsError, TlvError) as exc:
        raise ChipAuthenticationError(f"the chip did not prove its Chip Authentication key: {exc}") from None


def _access(
    channel: Channel, key: AccessKey, options: ChipReadOptions, key_source: KeySource, random: RandomSource
) -> str:
    """Establish secure messaging; returns the protocol name. PACE first when offered (9303-11 §4.2)."""
    info = None
    if options.try_pace:
        try:
            card_access = read_file(channel, EF_CARD_ACCESS, SHORT_CHUNK)
            info = choose(parse_card_access(card_access))
        except (CardStatusError, LdsError, TlvError):
            info = None  # no EF.CardAccess (BAC-only chip) or one we cannot use
    if info is not None:
        try:
            channel.sm = perform_pace(channel, key, info, key_source)
            channel.select_application(EMRTD_AID)
            return f"PACE-ECDH-GM-{info.cipher.upper()}-{info.curve.name}"
        except PaceError as exc:
            log.warning("pace_failed_trying_bac", error=str(exc))
            channel.sm = None
    channel.select_application(EMRTD_AID)
    channel.sm = perform_bac(channel, key, random)
    return "BAC"


def read_document(
    transport: Transport,
    key: AccessKey,
    trust: TrustList | None,
    now: datetime,
    *,
    atr: bytes = b"",
    options: ChipReadOptions | None = None,
    on_face: Callable[[FaceImage], None] | None = None,
    key_source: KeySource = random_scalar,
    random: RandomSource = os.urandom,
) -> ChipResult:
    """Read and authenticate one chip. Never raises for a chip problem: the result says what failed."""
    opts = options or ChipReadOptions()
    channel = Channel(transport)
    steps = _Steps(channel)
    extended = opts.extended_length == "on" or (opts.extended_length == "auto" and atr_supports_extended_length(atr))
    chunk = opts.extended_chunk if extended else SHORT_CHUNK
    protocol: str | None = None
    files: dict[int, bytes] = {}
    mrz: str | None = None
    face: FaceImage | None = None
    ca_state = "not_offered"
    stage = "access"

    def result(failure: ChipFailure | None, detail: str = "", **extra: object) -> ChipResult:
        return ChipResult(
            failure,
            detail,
            access_protocol=protocol,
            data_groups=tuple(sorted(files)),
            mrz=mrz,
            face=face,
            extended_length=extended,
            timings=tuple(steps.timings),
            **extra,  # type: ignore[arg-type]
        )

    try:
        try:
            protocol = steps.run("access", lambda: _access(channel, key, opts, key_source, random))
        except CardStatusError as exc:
            if channel.sm is None and exc.sw in (0x6A82, 0x6A86, 0x6D00, 0x6E00):
                return result(ChipFailure.NOT_EMRTD, f"no eMRTD application: {exc}")
            raise
        stage = "dg1"
        files[1] = steps.run("dg1", lambda: read_file(channel, DATA_GROUPS[1][0], chunk))
        mrz = parse_dg1(files[1])
        stage = "dg2"
        files[2] = steps.run("dg2", lambda: read_file(channel, DATA_GROUPS[2][0], chunk))
        face = parse_dg2(files[2])
        if on_face is not None:
            on_face(face)
        stage = "sod"
        sod_file = steps.run("sod", lambda: read_file(channel, EF_SOD, chunk))
        listed = set(parse_sod(sod_file).hashes)
        stage = "com"
        com = parse_ef_com(steps.run("com", lambda: read_file(channel, EF_COM, chunk)))
        listed |= set(com.data_groups)
        for dg in (14, 15):
            if dg in listed:
                stage = f"dg{dg}"
                fid = DATA_GROUPS[dg][0]
                files[dg] = steps.run(stage, lambda fid=fid: read_file(channel, fid, chunk))  # type: ignore[misc]
        stage = "pa"
        pa = steps.run("pa", lambda: passive_authentication(sod_file, files, trust, now))
        if 14 in files:
            # DG14 is trusted only once PA proved it (9303-11 §6.2); CA is preferred to AA when both exist.
            stage = "ca"
            chosen = parse_dg14(files[14]).choose()
            if chosen is not None:
                steps.run("ca", lambda: _chip_authentication(channel, chosen, key_source, chunk))
                ca_state = "done"
        if 15 in files and ca_state != "done":
            # DG15 is trusted only once PA proved it; then the chip must prove it holds the private key.
            stage = "aa"
            aa_key = parse_dg15(files[15])
            steps.run("aa", lambda: perform_aa(channel, aa_key, random))
    except ActiveAuthenticationFailed as exc:
        return result(ChipFailure.AA_FAILED, str(exc), active_authentication="failed")
    except ChipAuthenticationError as exc:
        return result(ChipFailure.CA_FAILED, str(exc), chip_authentication="failed")
    except AccessDenied as exc:
        return result(ChipFailure.ACCESS_DENIED, str(exc))
    except PaError as exc:
        return result(ChipFailure.PA_FAILED, exc.message, pa_failure=exc.failure)
    except (LdsError, TlvError, PaceError) as exc:
        return result(ChipFailure.MALFORMED, f"{stage}: {exc}")
    except (ChipIOError, SecureMessagingError, CardStatusError) as exc:
        return result(ChipFailure.UNREADABLE, f"{stage}: {exc}")
    except Exception as exc:
        # Chip data that trips a parsing library in a way not foreseen above: refer, never crash the lane.
        log.error("chip_read_unexpected_error", stage=stage, error_type=type(exc).__name__)
        return result(ChipFailure.MALFORMED, f"{stage}: unexpected {type(exc).__name__}")
    offered = {
        "chip_authentication": ca_state if ca_state == "done" else "not_done" if 14 in files else "not_offered",
        "active_authentication": ("not_done" if ca_state == "done" else "done") if 15 in files else "not_offered",
    }
    return result(None, "", pa=pa, **offered)
