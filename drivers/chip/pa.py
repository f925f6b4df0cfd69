"""Passive Authentication (ICAO Doc 9303 part 11 §5.1): EF.SOD's CMS signature, the Document Signer
chained to a trusted CSCA, its validity and revocation, and every read data group's hash.

`asn1crypto` parses the CMS SignedData (eContent type id-icao-mrtd-security-ldsSecurityObject,
2.23.136.1.1.1); `cryptography` checks the signatures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from asn1crypto import cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from egate.drivers.chip.tlv import TlvError, parse_one
from egate.drivers.compat import StrEnum

LDS_SECURITY_OBJECT_OID = "2.23.136.1.1.1"
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class PaFailure(StrEnum):
    """Why Passive Authentication failed; each is a referral sub-reason (no personal data)."""

    MALFORMED = "pa_malformed"
    SIGNATURE = "pa_signature"
    UNTRUSTED_CSCA = "pa_untrusted_csca"
    DS_EXPIRED = "pa_ds_expired"
    DS_REVOKED = "pa_ds_revoked"
    HASH_MISMATCH = "pa_hash_mismatch"
    NO_TRUST_LIST = "pa_no_trust_list"


class PaError(Exception):
    def __init__(self, failure: PaFailure, message: str) -> None:
        super().__init__(f"{failure.value}: {message}")
        self.failure = failure
        self.message = message


class DataGroupHash(core.Sequence):
    _fields = [("data_group_number", core.Integer), ("data_group_hash_value", core.OctetString)]  # noqa: RUF012 - asn1crypto's declarative spec


class DataGroupHashes(core.SequenceOf):
    _child_spec = DataGroupHash


class LdsVersionInfo(core.Sequence):
    _fields = [("lds_version", core.PrintableString), ("unicode_version", core.PrintableString)]  # noqa: RUF012 - asn1crypto's declarative spec


class LdsSecurityObject(core.Sequence):
    _fields = [  # noqa: RUF012 - asn1crypto's declarative spec
        ("version", core.Integer),
        ("hash_algorithm", cms.DigestAlgorithm),
        ("data_group_hash_values", DataGroupHashes),
        ("lds_version_info", LdsVersionInfo, {"optional": True}),
    ]


@dataclass(frozen=True)
class TrustList:
    """Trusted CSCA certificates and their CRLs (from the ops `csca` bundle)."""

    cscas: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    @classmethod
    def from_der(cls, certificates: Iterable[bytes], crls: Iterable[bytes] = ()) -> TrustList:
        return cls(
            tuple(x509.load_der_x509_certificate(c) for c in certificates),
            tuple(x509.load_der_x509_crl(c) for c in crls),
        )


@dataclass(frozen=True)
class SodContent:
    hash_algorithm: str
    hashes: dict[int, bytes]
    signed_data: cms.SignedData = field(repr=False)
    encap_content: bytes = field(repr=False)


@dataclass(frozen=True)
class PaResult:
    """What Passive Authentication established (no personal data: issuer-side names only)."""

    ds_subject: str
    csca_subject: str
    hash_algorithm: str
    checked_groups: tuple[int, ...]


def parse_sod(data: bytes) -> SodContent:
    try:
        top, _ = parse_one(data)
        if top.tag != 0x77:
            raise PaError(PaFailure.MALFORMED, "EF.SOD does not start with tag 77")
        info = cms.ContentInfo.load(top.value)
        if info["content_type"].native != "signed_data":
            raise PaError(PaFailure.MALFORMED, "EF.SOD is not a CMS SignedData")
        signed = info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].dotted != LDS_SECURITY_OBJECT_OID:
            raise PaError(PaFailure.MALFORMED, "EF.SOD content type is not ldsSecurityObject")
        raw = encap["content"].native
        if not isinstance(raw, bytes):
            raise PaError(PaFailure.MALFORMED, "EF.SOD has no encapsulated LDS security object")
        lso = LdsSecurityObject.load(raw)
        algorithm = lso["hash_algorithm"]["algorithm"].native
        if algorithm not in _HASHES:
            raise PaError(PaFailure.MALFORMED, f"unsupported LDS hash algorithm {algorithm}")
        hashes_ = {
            int(h["data_group_number"].native): bytes(h["data_group_hash_value"].native)
            for h in lso["data_group_hash_values"]
        }
        return SodContent(algorithm, hashes_, signed, raw)
    except PaError:
        raise
    except (TlvError, ValueError, TypeError, KeyError) as exc:
        raise PaError(PaFailure.MALFORMED, f"EF.SOD does not parse: {type(exc).__name__}: {exc}") from None


def _verify_signature(
    public_key: object, signature: bytes, data: bytes, signature_algo: str, hash_name: str, pss_salt: int | None
) -> None:
    algorithm = _HASHES[hash_name]()
    if isinstance(public_key, rsa.RSAPublicKey):
        if signature_algo == "rsassa_pss":
            salt = pss_salt if pss_salt is not None else algorithm.digest_size
            public_key.verify(signature, data, padding.PSS(mgf=padding.MGF1(algorithm), salt_length=salt), algorithm)
        else:
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(algorithm))
    else:
        raise InvalidSignature("unsupported Document Signer key type")


def _signer_certificate(signed: cms.SignedData, signer: cms.SignerInfo) -> x509.Certificate:
    sid = signer["sid"]
    certificates = [c.chosen for c in signed["certificates"] or [] if c.name == "certificate"]
    for cert in certificates:
        if sid.name == "issuer_and_serial_number":
            if cert.issuer == sid.chosen["issuer"] and cert.serial_number == sid.chosen["serial_number"].native:
                return x509.load_der_x509_certificate(cert.dump())
        elif cert.key_identifier == sid.chosen.native:
            return x509.load_der_x509_certificate(cert.dump())
    raise PaError(PaFailure.SIGNATURE, "EF.SOD carries no Document Signer certificate matching its signer")


def verify_sod(sod: SodContent, trust: TrustList | None, now: datetime) -> tuple[x509.Certificate, x509.Certificate]:
    """Check the SOD signature, the DS chain, validity and CRL. Returns (DS, CSCA)."""
    if trust is None or not trust.cscas:
        raise PaError(PaFailure.NO_TRUST_LIST, "no CSCA certificates on this gate: push a csca bundle")
    signers = sod.signed_data["signer_infos"]
    if len(signers) != 1:
        raise PaError(PaFailure.MALFORMED, f"EF.SOD has {len(signers)} signers, expected 1")
    signer = signers[0]
    ds = _signer_certificate(sod.signed_data, signer)
    digest_name = signer["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        raise PaError(PaFailure.SIGNATURE, f"unsupported digest {digest_name}")
    signed_attrs = signer["signed_attrs"]
    if signed_attrs.native is None or len(signed_attrs) == 0:
        raise PaError(PaFailure.SIGNATURE, "EF.SOD signer has no signed attributes (9303-10 requires them)")
    message_digest = None
    for attr in signed_attrs:
        if attr["type"].native == "message_digest":
            message_digest = attr["values"][0].native
    expected = hashlib.new(digest_name, sod.encap_content).digest()
    if message_digest != expected:
        raise PaError(PaFailure.SIGNATURE, "messageDigest attribute does not match the LDS security object")
    # The signature covers the DER of the attributes as a SET (tag 31), not their [0] IMPLICIT form.
    to_verify = b"\x31" + signed_attrs.dump()[1:]
    sig_algo = signer["signature_algorithm"]
    algo_name = sig_algo.signature_algo
    pss_salt = None
    if algo_name == "rsassa_pss":
        pss_salt = sig_algo["parameters"]["salt_length"].native
    try:
        hash_name = (
            sig_algo.hash_algo
            if algo_name != "rsassa_pss"
            else sig_algo["parameters"]["hash_algorithm"]["algorithm"].native
        )
    except ValueError:
        hash_name = digest_name
    try:
        _verify_signature(ds.public_key(), signer["signature"].native, to_verify, algo_name, hash_name, pss_salt)
    except (InvalidSignature, ValueError, KeyError) as exc:
        raise PaError(
            PaFailure.SIGNATURE, f"EF.SOD signature does not verify with its DS certificate ({type(exc).__name__})"
        ) from None
    csca = _issuer_in(trust, ds)
    if not (ds.not_valid_before_utc <= now <= ds.not_valid_after_utc):
        raise PaError(
            PaFailure.DS_EXPIRED,
            f"Document Signer valid {ds.not_valid_before_utc:%Y-%m-%d} to {ds.not_valid_after_utc:%Y-%m-%d}, now {now:%Y-%m-%d}",
        )
    for crl in trust.crls:
        if crl.issuer != csca.subject:
            continue
        if not crl.is_signature_valid(csca.public_key()):  # type: ignore[arg-type]
            continue  # a CRL that does not verify says nothing either way
        if crl.get_revoked_certificate_by_serial_number(ds.serial_number) is not None:
            raise PaError(PaFailure.DS_REVOKED, f"Document Signer serial {ds.serial_number:X} is on the CSCA's CRL")
    return ds, csca


def _issuer_in(trust: TrustList, ds: x509.Certificate) -> x509.Certificate:
    for csca in trust.cscas:
        if csca.subject != ds.issuer:
            continue
        try:
            ds.verify_directly_issued_by(csca)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return csca
    raise PaError(
        PaFailure.UNTRUSTED_CSCA, f"Document Signer issued by {ds.issuer.rfc4514_string()}, not a trusted CSCA"
    )


def check_hashes(sod: SodContent, files: Mapping[int, bytes]) -> tuple[int, ...]:
    """Every read data group must hash to the SOD's value."""
    for number, content in sorted(files.items()):
        expected = sod.hashes.get(number)
        if expected is None:
            raise PaError(PaFailure.HASH_MISMATCH, f"DG{number} was read but EF.SOD has no hash for it")
        if hashlib.new(sod.hash_algorithm, content).digest() != expected:
            raise PaError(PaFailure.HASH_MISMATCH, f"DG{number} does not hash to the EF.SOD value")
    return tuple(sorted(files))


def passive_authentication(
    sod_file: bytes, files: Mapping[int, bytes], trust: TrustList | None, now: datetime
) -> PaResult:
    """Run Passive Authentication; raises PaError with one PaFailure."""
    try:
        sod = parse_sod(sod_file)
        ds, csca = verify_sod(sod, trust, now)
        checked = check_hashes(sod, files)
        return PaResult(ds.subject.rfc4514_string(), csca.subject.rfc4514_string(), sod.hash_algorithm, checked)
    except PaError:
        raise
    except Exception as exc:
        # asn1crypto parses lazily and `cryptography` rejects odd keys late: whatever the chip's EF.SOD
        # breaks inside them is a malformed SOD, never a crash of the lane.
        raise PaError(PaFailure.MALFORMED, f"EF.SOD does not parse: {type(exc).__name__}") from None
