"""Personal data through the whole lane: a known traveller's documents in, every output searched.

The real daemon in entry mode reads, from the serial reader simulator, a passport MRZ that the parser
repairs (names with a misread filler, an issuer code with a digit), the same passport with errors (a
birth date that is no date, long expired) and a boarding pass with a bad airport code. Then every output
is searched for each personal value: the daemon's log lines, control API replies, `egate diag reader`
JSON, outbox rows, MQTT payloads and every file under the state dir. Only masked forms may appear.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from egate.drivers.document.mrz import check_digit
from egate.edge.lane.adapters import HashedSubjectLookup
from egate.tools.rig.lane import GATE, SITE, LaneRig, prepare_ops
from egate.tools.sim.reader import ReaderSimulator
from tests.support.broker import wait_until
from tests.support.rig import GAP, LEAD_IN, RIG

pytestmark = RIG

SUBJECT_KEY = secrets.token_bytes(32)
NUMBER, ISSUER = "X1234567", "UTO"  # the woman of the enrolment clip is enrolled under this document
SURNAME, GIVEN, BIRTH = "QUIXBERRYFOLD", "ZEBEDIAH", "470829"
PNR, SEAT, SEQUENCE = "QZX9WK", "017C", "0025"
BOARDING_PASS = f"M1{SURNAME}/{GIVEN[:6]}E{PNR} Q1ZFRAAC 0834 326J{SEAT}{SEQUENCE} 100"

PERSONAL = {
    "document number": NUMBER,
    "surname": SURNAME,
    "given names": GIVEN,
    "birth date (MRZ)": BIRTH,
    "birth date (ISO)": "1947-08-29",
    "bad birth date": "471329",
    "boarding pass name": f"{SURNAME}/{GIVEN[:6]}",
    "PNR": PNR,
    "boarding pass text": BOARDING_PASS[:30],
}


def td3(*, birth: str, expiry: str, filler_misread: bool, issuer_misread: bool) -> list[str]:
    names = f"{SURNAME}<<{GIVEN}"
    line1 = f"P<{ISSUER}{names}".ljust(44, "<")
    if filler_misread:  # after three fillers only fillers may follow: the reader's K is repaired
        line1 = line1[:40] + "K" + line1[41:]
    num, optional = NUMBER.ljust(9, "<"), "<" * 14
    body = (
        num + check_digit(num) + ISSUER + birth + check_digit(birth) + "F" + expiry + check_digit(expiry)
        + optional + check_digit(optional)
    )  # fmt: skip
    line2 = body + check_digit(body[0:10] + body[13:20] + body[21:43])
    if issuer_misread:
        line1 = line1[:2] + "UT0" + line1[5:]
    return [line1, line2]


def _diag_reader(config: Path) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "egate.tools.cli", "diag", "reader", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return run.stdout + run.stderr


def _outbox_rows(state: Path) -> str:
    rows: list[str] = []
    for db in state.rglob("*.sqlite"):
        with sqlite3.connect(db) as conn:
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                rows += [repr(row) for row in conn.execute(f'SELECT * FROM "{table}"')]
    return "\n".join(rows)


def _wait_reader(rig: LaneRig, predicate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        last = rig.call("reader.last")
        if last["result"] is not None and predicate(last):
            found.append(last)
            return True
        return False

    wait_until(ready, 20, "the daemon's reader.last to show the document")
    return found[-1]


@pytest.fixture
def reader() -> Iterator[ReaderSimulator]:
    with ReaderSimulator() as sim:
        yield sim


def test_personal_values_leave_the_lane_only_masked(tmp_path: Path, reader: ReaderSimulator) -> None:
    lookup = HashedSubjectLookup(SUBJECT_KEY, lambda: None)
    ops = prepare_ops(
        tmp_path / "ops",
        scope=f"{SITE}:{GATE}",
        subject_ids=(lookup.subject_for_document(NUMBER, ISSUER), "subject-0002"),
    )
    rig = LaneRig(
        tmp_path / "rig",
        ops=ops,
        plan=None,
        subject_key=SUBJECT_KEY,
        config={
            "gate": {"mode": "entry"},
            "reader": {"serial_url": reader.port_path},
            "lane": {"capture_timeout_s": 4.0},
        },
    )
    rig.start()
    outputs: dict[str, str] = {}
    try:
        rig.play([LEAD_IN, "female", GAP], loop=True)
        reader.send_mrz(td3(birth=BIRTH, expiry="310415", filler_misread=True, issuer_misread=True))
        [first] = rig.wait_outcomes(1, timeout=30)
        assert first["decision"] == "accept", first  # the repaired document is hers
        last = rig.call("reader.last")
        assert [r["field"] for r in last["result"]["repairs"]], last  # repairs are reported, by field only
        outputs["control reader.last (repaired MRZ)"] = json.dumps(last)
        outputs["diag reader (repaired MRZ)"] = _diag_reader(rig.config_path)
        rig.wait_state("idle", 20)

        reader.send_mrz(td3(birth="471329", expiry="200101", filler_misread=False, issuer_misread=False))
        last = _wait_reader(rig, lambda r: r["result"]["kind"] == "mrz" and r["result"]["errors"])
        assert {e["field"] for e in last["result"]["errors"]} >= {"birth_date"}, last
        outputs["control reader.last (MRZ with errors)"] = json.dumps(last)
        outputs["diag reader (MRZ with errors)"] = _diag_reader(rig.config_path)

        reader.send_bcbp(BOARDING_PASS)
        last = _wait_reader(rig, lambda r: r["result"]["kind"] == "bcbp")
        assert last["result"]["errors"] and last["result"]["boarding_pass"]["legs"][0]["to_airport"] == "FRA"
        outputs["control reader.last (BCBP)"] = json.dumps(last)
        outputs["diag reader (BCBP)"] = _diag_reader(rig.config_path)
        for cmd in ("status", "outcomes", "mqtt.status", "gate.status"):
            outputs[f"control {cmd}"] = json.dumps(rig.call(cmd))
        assert rig.mqtt is not None
        outputs["mqtt payloads"] = "\n".join(json.dumps(m.payload) for m in rig.mqtt.messages)
        outputs["outbox rows"] = _outbox_rows(rig.state_dir)
    finally:
        rig.close()
    outputs["daemon log"] = rig.log_path.read_text(errors="replace")
    outputs["daemon stderr"] = rig.stderr_path.read_text(errors="replace")
    for path in rig.state_dir.rglob("*"):
        if path.is_file():
            outputs[f"state file {path.relative_to(rig.state_dir)}"] = path.read_bytes().decode("latin-1")
    assert "X1***7" in outputs["control reader.last (repaired MRZ)"]
    leaks = [
        f"{what} in {where}" for where, text in outputs.items() for what, value in PERSONAL.items() if value in text
    ]
    assert leaks == [], leaks
