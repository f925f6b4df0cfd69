"""CSCA trust lists from ops: `egate ops csca build`, verification as a signed bundle, activation,
reload at start, rollback and expiry, and Passive Authentication with the activated list."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import typer
from asn1crypto import cms, core
from asn1crypto import x509 as ax509
from typer.testing import CliRunner

from egate.drivers.chip.pa import PaError, PaFailure, passive_authentication
from egate.edge.lane.ops import OpsHandler
from egate.edge.trust.bundles import BundleRejected, RejectCode, VersionState
from egate.edge.trust.csca import CscaStore
from egate.edge.trust.csca_payload import encode_csca_payload
from egate.tools.ops import csca as ops_csca
from egate.tools.ops import keys as ops_keys
from egate.tools.sim.chip.passport import build_passport, make_crl, make_pki, synthetic_face
from tests.support.gallery_fixtures import GALLERY_KEY, new_ops_key, plain_bundle, trust_with, verifier_for
from tests.support.gallery_fixtures import NOW as OPS_NOW

runner = CliRunner()
NOW = datetime.now(timezone.utc)


def _ops() -> typer.Typer:
    app = typer.Typer()
    ops_keys.register(app)
    ops_csca.register(app)
    return app


def _master_list(certificates: list[bytes]) -> bytes:
    """A CSCA master list's CMS structure (unsigned here: the build step does not check its signature)."""
    content = ops_csca.CscaMasterList({"version": 0, "cert_list": [ax509.Certificate.load(c) for c in certificates]})
    signed = cms.SignedData(
        {
            "version": "v3",
            "digest_algorithms": [],
            "encap_content_info": {
                "content_type": ops_csca.MASTER_LIST_OID,
                "content": core.ParsableOctetString(content.dump()),
            },
            "signer_infos": [],
        }
    )
    return cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()


def test_ops_builds_a_csca_bundle_from_pem_der_crl_and_master_list(tmp_path: Path) -> None:
    app = _ops()
    key = json.loads(
        runner.invoke(app, ["keys", "new", "--out", str(tmp_path / "keys"), "--json"]).stdout.splitlines()[-1]
    )
    a, b, c = make_pki(NOW, csca_name="A CSCA"), make_pki(NOW, csca_name="B CSCA"), make_pki(NOW, csca_name="C CSCA")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "a.pem").write_bytes(a.csca_pem())
    (tmp_path / "certs" / "a-again.der").write_bytes(a.csca_der())  # duplicates are dropped
    (tmp_path / "b.der").write_bytes(b.csca_der())
    (tmp_path / "ml.der").write_bytes(_master_list([c.csca_der(), a.csca_der()]))
    (tmp_path / "a.crl").write_bytes(make_crl(a, NOW, (a.ds.serial_number,)))
    out = tmp_path / "csca.egb"
    result = runner.invoke(
        app,
        [
            "csca",
            "build",
            "--out",
            str(out),
            "--key",
            key["private_key"],
            "--cert",
            str(tmp_path / "certs"),
            "--cert",
            str(tmp_path / "b.der"),
            "--master-list",
            str(tmp_path / "ml.der"),
            "--crl",
            str(tmp_path / "a.crl"),
            "--version",
            "7",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.splitlines()[-1])
    assert info["cscas"] == 3 and info["crls"] == 1

    from egate.edge.trust.keys import TrustStore

    runner.invoke(app, ["keys", "install", key["public_key"], "--trust-dir", str(tmp_path / "trust")])
    verifier = verifier_for(TrustStore(tmp_path / "trust"))
    verified = verifier.verify(out.read_bytes(), datetime.now(timezone.utc))
    trust = CscaStore(tmp_path / "csca").activate(verified)
    assert {x.subject.rfc4514_string() for x in trust.cscas} == {"CN=A CSCA,C=UT", "CN=B CSCA,C=UT", "CN=C CSCA,C=UT"}
    face, size = synthetic_face(2_000)
    for pki, failure in ((b, None), (c, None), (a, PaFailure.DS_REVOKED)):
        chip = build_passport(pki, face, size)
        files = {1: chip.files[0x0101], 2: chip.files[0x0102]}
        if failure is None:
            assert passive_authentication(chip.files[0x011D], files, trust, NOW).checked_groups == (1, 2)
        else:
            with pytest.raises(PaError) as err:
                passive_authentication(chip.files[0x011D], files, trust, NOW)
            assert err.value.failure is failure


def test_csca_bundles_follow_the_gallery_rules(tmp_path: Path) -> None:
    key = new_ops_key()
    trust = trust_with(tmp_path / "trust", key)
    state = VersionState(tmp_path / "versions.json")
    verifier = verifier_for(trust, state)
    from egate.edge.gallery.store import GalleryStore

    store = CscaStore(tmp_path / "csca")
    posted: list[object] = []
    ops = OpsHandler(
        verifier,
        GalleryStore(tmp_path / "gallery", GALLERY_KEY),
        trust,
        posted.append,
        config_dir=tmp_path / "config",
        csca=store,
        clock=lambda: OPS_NOW,
    )
    pki = make_pki(NOW)
    payload = encode_csca_payload([pki.csca_der()], [])

    def push(raw: bytes) -> object:
        return ops.on_bundle("csca", raw)  # the link hands a completed transfer over as bytes

    ack = push(plain_bundle(key, "csca", payload, version=5))
    assert ack.status == "applied", ack
    assert store.trust(OPS_NOW) is not None and store.version == 5
    # Rollback: the same or an older version is refused, the active list stays.
    ack = push(plain_bundle(key, "csca", payload, version=4))
    assert ack.status == "rejected" and ack.code == RejectCode.ROLLBACK.value and store.version == 5
    # Signed by ops but not certificates: refused before activation.
    bad = plain_bundle(key, "csca", json.dumps({"payload_version": 1, "certificates": ["AAAA"]}).encode(), version=6)
    ack = push(bad)
    assert ack.status == "rejected" and ack.code == RejectCode.MALFORMED.value and store.version == 5
    # Altered in transit.
    tampered = bytearray(plain_bundle(key, "csca", payload, version=7))
    tampered[-5] ^= 1
    assert push(bytes(tampered)).code == RejectCode.SHA256_MISMATCH.value
    # Reload at start; expiry drops the list (Passive Authentication then says pa_no_trust_list).
    reloaded = CscaStore(tmp_path / "csca")
    assert reloaded.load() is not None and reloaded.version == 5
    assert reloaded.trust(OPS_NOW) is not None
    assert reloaded.trust(OPS_NOW + timedelta(hours=7)) is None
    with pytest.raises(BundleRejected):
        verifier.verify(plain_bundle(key, "csca", payload, version=8), OPS_NOW + timedelta(hours=7))
