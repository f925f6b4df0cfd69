"""Bundle verification: one test per rejection code, rotation, revocation, version state."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

from egate.edge.trust.bundles import (
    BundleHeader,
    BundleRejected,
    BundleScope,
    RejectCode,
    VersionState,
    assemble,
    split_envelope,
)
from egate.edge.trust.keys import KeysPayload, TrustStore
from tests.support.gallery_fixtures import (
    NOW,
    gallery_bundle,
    new_ops_key,
    plain_bundle,
    random_subjects,
    trust_with,
    verifier_for,
)


def _rejected(verifier, raw: bytes, code: RejectCode, now=NOW) -> BundleRejected:
    with pytest.raises(BundleRejected) as info:
        verifier.verify(raw, now)
    assert info.value.code == code, info.value.message
    return info.value


def test_good_gallery_bundle_verifies(tmp_path: Path) -> None:
    key = new_ops_key()
    verifier = verifier_for(trust_with(tmp_path, key))
    verified = verifier.verify(gallery_bundle(key, random_subjects(20, per_subject=(1, 3))), NOW)
    assert verified.kind == "gallery" and verified.content.meta.subject_count == 20


def test_bad_signature(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = bytearray(gallery_bundle(key, random_subjects(3)))
    header_len = int.from_bytes(raw[4:8], "little")
    raw[8 + header_len + 5] ^= 0x01  # flip a bit of the signature
    _rejected(verifier_for(trust_with(tmp_path, key)), bytes(raw), RejectCode.BAD_SIGNATURE)


def test_header_altered_after_signing_is_bad_signature(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = gallery_bundle(key, random_subjects(3), version=1)
    env = split_envelope(raw)
    forged = env.header_bytes.replace(b'"version":1', b'"version":9')
    assert forged != env.header_bytes
    bad = assemble(forged, env.signature, raw[env.payload_offset :])
    _rejected(verifier_for(trust_with(tmp_path, key)), bad, RejectCode.BAD_SIGNATURE)


def test_unknown_key(tmp_path: Path) -> None:
    trusted, stranger = new_ops_key(), new_ops_key()
    _rejected(
        verifier_for(trust_with(tmp_path, trusted)),
        gallery_bundle(stranger, random_subjects(3)),
        RejectCode.UNKNOWN_KEY,
    )


def test_revoked_key(tmp_path: Path) -> None:
    a, b = new_ops_key(), new_ops_key()
    trust = trust_with(tmp_path, a, b)
    trust.revoke(a.key_id)
    _rejected(verifier_for(trust), gallery_bundle(a, random_subjects(3)), RejectCode.REVOKED_KEY)
    # A revoked key cannot come back through a local install either.
    with pytest.raises(RuntimeError, match="revoked"):
        trust.install(a.entry)


def test_rollback_same_and_older_version(tmp_path: Path) -> None:
    key = new_ops_key()
    state = VersionState(tmp_path / "versions.json")
    verifier = verifier_for(trust_with(tmp_path / "trust", key), state)
    verified = verifier.verify(gallery_bundle(key, random_subjects(3), version=5), NOW)
    verifier.accept(verified)
    _rejected(verifier, gallery_bundle(key, random_subjects(3), version=5), RejectCode.ROLLBACK)
    _rejected(verifier, gallery_bundle(key, random_subjects(3), version=4), RejectCode.ROLLBACK)
    # Persisted: a new verifier after a restart still refuses; other kinds are independent.
    again = verifier_for(trust_with(tmp_path / "trust", key), VersionState(tmp_path / "versions.json"))
    _rejected(again, gallery_bundle(key, random_subjects(3), version=3), RejectCode.ROLLBACK)
    again.verify(gallery_bundle(key, random_subjects(3), version=6), NOW)


def test_expired(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = gallery_bundle(
        key, random_subjects(3), issued_at=NOW - timedelta(days=2), expires_at=NOW - timedelta(seconds=1)
    )
    _rejected(verifier_for(trust_with(tmp_path, key)), raw, RejectCode.EXPIRED)


def test_not_yet_valid(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = gallery_bundle(
        key, random_subjects(3), issued_at=NOW + timedelta(hours=1), expires_at=NOW + timedelta(hours=9)
    )
    _rejected(verifier_for(trust_with(tmp_path, key)), raw, RejectCode.NOT_YET_VALID)
    # Within the configured clock skew (5 min) it is accepted.
    ok = gallery_bundle(key, random_subjects(3), issued_at=NOW + timedelta(minutes=2))
    verifier_for(trust_with(tmp_path, key)).verify(ok, NOW)


@pytest.mark.parametrize("scope", [BundleScope(site="cdg"), BundleScope(site="ams", gates=("g01", "g02"))])
def test_wrong_scope(tmp_path: Path, scope: BundleScope) -> None:
    key = new_ops_key()
    _rejected(
        verifier_for(trust_with(tmp_path, key)),
        gallery_bundle(key, random_subjects(3), scope=scope),
        RejectCode.WRONG_SCOPE,
    )


def test_scope_naming_this_gate_or_all_sites_is_accepted(tmp_path: Path) -> None:
    key = new_ops_key()
    verifier = verifier_for(trust_with(tmp_path, key))
    verifier.verify(gallery_bundle(key, random_subjects(3), scope=BundleScope(site="ams", gates=("g07",))), NOW)
    verifier.verify(gallery_bundle(key, random_subjects(3), scope=BundleScope(site="*")), NOW)


def test_sha256_mismatch(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = bytearray(gallery_bundle(key, random_subjects(3)))
    raw[-1] ^= 0xFF  # a template byte changed, length unchanged
    _rejected(verifier_for(trust_with(tmp_path, key)), bytes(raw), RejectCode.SHA256_MISMATCH)


def test_length_mismatch(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = gallery_bundle(key, random_subjects(3))
    _rejected(verifier_for(trust_with(tmp_path, key)), raw[:-100], RejectCode.LENGTH_MISMATCH)


def test_payload_too_large(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = gallery_bundle(key, random_subjects(50))
    verifier = verifier_for(trust_with(tmp_path, key), max_bytes=4096)
    error = _rejected(verifier, raw, RejectCode.TOO_LARGE)
    assert "max_bundle_bytes" in error.message


def test_wrong_model(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = gallery_bundle(key, random_subjects(3), model_id="some-other-model")
    error = _rejected(verifier_for(trust_with(tmp_path, key)), raw, RejectCode.WRONG_MODEL)
    assert "some-other-model" in error.message


@pytest.mark.parametrize(
    "kind,payload",
    [
        ("gallery", b"EGGP\x00\x00\x00\x00 not a gallery"),
        ("keys", b'{"payload_version":1,"trusted":[]}'),
        ("command", b'{"payload_version":1,"command_id":"c1","name":"format_disk"}'),
        ("config", b"[gate]\nsite_id = 'bad id with spaces'\n"),
    ],
)
def test_malformed_payload(tmp_path: Path, kind, payload: bytes) -> None:
    key = new_ops_key()
    if kind == "gallery":
        from egate.edge.trust.bundles import GalleryLayout, sign_bundle

        raw = sign_bundle(
            kind="gallery",
            version=1,
            payload=payload,
            private_key=key.private,
            key_id=key.key_id,
            scope=BundleScope(site="ams"),
            issued_at=NOW - timedelta(hours=1),
            expires_at=NOW + timedelta(hours=1),
            gallery=GalleryLayout(model_id="dlib_resnet_v1-test", dim=128, subject_count=1, template_count=1),
        )
    else:
        raw = plain_bundle(key, kind, payload)
    _rejected(verifier_for(trust_with(tmp_path, key)), raw, RejectCode.MALFORMED)


def test_malformed_envelope(tmp_path: Path) -> None:
    key = new_ops_key()
    verifier = verifier_for(trust_with(tmp_path, key))
    _rejected(verifier, b"PK\x03\x04 a zip file", RejectCode.MALFORMED)
    _rejected(verifier, b"EGB1" + (10).to_bytes(4, "little") + b"{not json}" + bytes(64), RejectCode.MALFORMED)


def test_rotation_and_revocation_through_keys_bundles(tmp_path: Path) -> None:
    old, new, later = new_ops_key(), new_ops_key(), new_ops_key()
    trust = trust_with(tmp_path, old)
    state = VersionState(None)
    verifier = verifier_for(trust, state)
    rotation = KeysPayload(trusted=[new.entry], revoked=[old.key_id])
    verified = verifier.verify(plain_bundle(old, "keys", rotation.model_dump_json().encode()), NOW)
    trust.apply_keys(verified.content, signed_by=verified.header.key_id)
    verifier.accept(verified)
    assert trust.key_ids() == [new.key_id] and trust.status(old.key_id) == "revoked"
    # Survives a restart of the trust store.
    reopened = TrustStore(tmp_path)
    assert reopened.key_ids() == [new.key_id] and reopened.status(old.key_id) == "revoked"
    # The old key no longer signs anything; the new one does.
    _rejected(verifier, gallery_bundle(old, random_subjects(3)), RejectCode.REVOKED_KEY)
    verifier.verify(gallery_bundle(new, random_subjects(3)), NOW)
    # A keys bundle from an untrusted key cannot rotate; a later one from the new key can,
    # and cannot bring the revoked key back.
    _rejected(
        verifier, plain_bundle(later, "keys", rotation.model_dump_json().encode(), version=2), RejectCode.UNKNOWN_KEY
    )
    comeback = KeysPayload(trusted=[new.entry, later.entry, old.entry])
    verified = verifier.verify(plain_bundle(new, "keys", comeback.model_dump_json().encode(), version=2), NOW)
    trust.apply_keys(verified.content, signed_by=new.key_id)
    assert trust.key_ids() == sorted([new.key_id, later.key_id])
    assert trust.status(old.key_id) == "revoked"


def test_command_and_config_bundles_parse(tmp_path: Path) -> None:
    key = new_ops_key()
    verifier = verifier_for(trust_with(tmp_path, key))
    cmd = verifier.verify(plain_bundle(key, "command", b'{"command_id":"c-1","name":"purge_gallery"}'), NOW)
    assert cmd.content.name == "purge_gallery"
    cfg = verifier.verify(plain_bundle(key, "config", b"[gate]\nsite_id = 'ams'\ngate_id = 'g07'\n"), NOW)
    assert "g07" in cfg.content


def test_header_is_canonical_and_carries_digest(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = gallery_bundle(key, random_subjects(2))
    env = split_envelope(raw)
    header = BundleHeader.model_validate_json(env.header_bytes)
    assert env.header_bytes == json.dumps(json.loads(env.header_bytes), sort_keys=True, separators=(",", ":")).encode()
    assert header.payload_sha256 == hashlib.sha256(raw[env.payload_offset :]).hexdigest()
    assert env.payload_offset % 64 == 0
