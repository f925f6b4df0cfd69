"""Test passports: a CSCA and Document Signer, the LDS files and an EF.SOD signed over them.

The EF.SOD is a CMS SignedData with eContent type 2.23.136.1.1.1 (ICAO Doc 9303 part 10 §4.6.2),
built with asn1crypto because `cryptography`'s PKCS7 builder cannot set that content type.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import cv2
import numpy as np
from asn1crypto import algos, cms, core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from egate.drivers.chip.access import AccessKey
from egate.drivers.chip.lds import DATA_GROUPS, EF_CARD_ACCESS, EF_COM, EF_SOD
from egate.drivers.chip.pa import LDS_SECURITY_OBJECT_OID, DataGroupHash, DataGroupHashes, LdsSecurityObject
from egate.drivers.chip.tlv import encode
from egate.drivers.document import check_digit


def td3_mrz(
    number: str,
    birth: str,
    expiry: str,
    *,
    surname: str = "ERIKSSON",
    given: str = "ANNA<MARIA",
    issuer: str = "UTO",
    nationality: str = "UTO",
    sex: str = "F",
    personal: str = "ZE184226B",
) -> tuple[str, str]:
    """Both lines of a passport MRZ (ICAO Doc 9303 part 4) with every check digit computed."""
    line1 = ("P<" + issuer + surname + "<<" + given).ljust(44, "<")[:44]
    num = number.ljust(9, "<")
    opt = personal.ljust(14, "<")
    line2 = num + check_digit(num) + nationality + birth + check_digit(birth) + sex + expiry + check_digit(expiry)
    line2 += opt + check_digit(opt)
    line2 += check_digit(line2[0:10] + line2[13:20] + line2[21:43])
    return line1, line2


# The ICAO Doc 9303 specimen traveller (Utopia), with an expiry in the future.
SPECIMEN_MRZ = td3_mrz("L898902C", "740812", "350415")


@dataclass(frozen=True)
class ChipPki:
    csca_key: ec.EllipticCurvePrivateKey = field(repr=False)
    csca: x509.Certificate
    ds_key: rsa.RSAPrivateKey = field(repr=False)
    ds: x509.Certificate

    def csca_der(self) -> bytes:
        return self.csca.public_bytes(serialization.Encoding.DER)

    def csca_pem(self) -> bytes:
        return self.csca.public_bytes(serialization.Encoding.PEM)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "UT"), x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(
    now: datetime,
    *,
    csca_name: str = "Utopia CSCA",
    ds_not_before: datetime | None = None,
    ds_not_after: datetime | None = None,
    ds_key_bits: int = 2048,
) -> ChipPki:
    """A CSCA (ECDSA P-256) and a Document Signer (RSA, PKCS#1 v1.5 SOD signatures) it issued."""
    csca_key = ec.generate_private_key(ec.SECP256R1())
    csca_subject = _name(csca_name)
    csca = (
        x509.CertificateBuilder()
        .subject_name(csca_subject)
        .issuer_name(csca_subject)
        .public_key(csca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=365))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(csca_key, hashes.SHA256())
    )
    ds_key = rsa.generate_private_key(65537, ds_key_bits)
    ds = (
        x509.CertificateBuilder()
        .subject_name(_name("Utopia Document Signer"))
        .issuer_name(csca_subject)
        .public_key(ds_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ds_not_before or now - timedelta(days=30))
        .not_valid_after(ds_not_after or now + timedelta(days=3650))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .sign(csca_key, hashes.SHA256())
    )
    return ChipPki(csca_key, csca, ds_key, ds)


def make_crl(pki: ChipPki, now: datetime, revoked_serials: tuple[int, ...] = ()) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.csca.subject)
        .last_update(now - timedelta(days=1))
        .next_update(now + timedelta(days=30))
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - timedelta(hours=1)).build()
        )
    return builder.sign(pki.csca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def dg1(mrz_lines: tuple[str, ...]) -> bytes:
    return encode(0x61, encode(0x5F1F, "".join(mrz_lines).encode("ascii")))


def face_record(image: bytes, width: int, height: int, *, jpeg2000: bool = False) -> bytes:
    """An ISO/IEC 19794-5:2005 face record with one full-frontal image."""
    info = bytes([1, 1 if jpeg2000 else 0]) + width.to_bytes(2, "big") + height.to_bytes(2, "big")
    info += bytes([1, 2]) + bytes(4)  # colour space sRGB, source: digital still camera, device, quality
    features = (20 + 12 + len(image)).to_bytes(4, "big") + bytes(2) + bytes(3) + bytes(3) + bytes(2) + bytes(6)
    block = features + info + image
    return b"FAC\x00010\x00" + (14 + len(block)).to_bytes(4, "big") + (1).to_bytes(2, "big") + block


def dg2(image: bytes, width: int, height: int, *, jpeg2000: bool = False) -> bytes:
    header = encode(
        0xA1, encode(0x80, b"\x01\x01") + encode(0x81, b"\x02") + encode(0x87, b"\x01\x01") + encode(0x88, b"\x00\x08")
    )
    template = encode(0x7F60, header + encode(0x5F2E, face_record(image, width, height, jpeg2000=jpeg2000)))
    return encode(0x75, encode(0x7F61, encode(0x02, b"\x01") + template))


def encode_face(pixels: np.ndarray, *, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def ef_com(groups: tuple[int, ...]) -> bytes:
    tags = bytes(DATA_GROUPS[g][1] for g in groups)
    return encode(0x60, encode(0x5F01, b"0107") + encode(0x5F36, b"040000") + encode(0x5C, tags))


def card_access(parameter_id: int, cipher_suffix: int = 2) -> bytes:
    """EF.CardAccess offering PACE-ECDH-GM-AES (suffix 2/3/4 = 128/192/256) on one curve."""
    oid = bytes.fromhex("04007F000702020402") + bytes([cipher_suffix])
    info = encode(0x06, oid) + encode(0x02, b"\x02") + encode(0x02, bytes([parameter_id]))
    return encode(0x31, encode(0x30, info))


def sign_sod(pki: ChipPki, groups: dict[int, bytes], *, hash_name: str = "sha256") -> bytes:
    lso = LdsSecurityObject(
        {
            "version": 0,
            "hash_algorithm": {"algorithm": hash_name},
            "data_group_hash_values": DataGroupHashes(
                [
                    DataGroupHash({"data_group_number": n, "data_group_hash_value": hashlib.new(hash_name, c).digest()})
                    for n, c in sorted(groups.items())
                ]
            ),
        }
    ).dump()
    signed_attrs = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": [LDS_SECURITY_OBJECT_OID]}),
            cms.CMSAttribute({"type": "message_digest", "values": [hashlib.new(hash_name, lso).digest()]}),
        ]
    )
    to_sign = b"\x31" + signed_attrs.dump()[1:]
    signature = pki.ds_key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    ds_asn1 = ax509.Certificate.load(pki.ds.public_bytes(serialization.Encoding.DER))
    signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                        {"issuer": ds_asn1.issuer, "serial_number": ds_asn1.serial_number}
                    )
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": hash_name}),
            "signed_attrs": signed_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"}),
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v3",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": hash_name})],
            "encap_content_info": {
                "content_type": LDS_SECURITY_OBJECT_OID,
                "content": core.ParsableOctetString(lso),
            },
            "certificates": [ds_asn1],
            "signer_infos": [signer],
        }
    )
    info = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
    return encode(0x77, info.dump())


@dataclass(frozen=True)
class VirtualPassport:
    """The files of one virtual chip (file id -> content) and the key its MRZ gives."""

    mrz: tuple[str, ...]
    files: dict[int, bytes] = field(repr=False)
    pace_parameter_id: int | None

    @property
    def key(self) -> AccessKey:
        line2 = self.mrz[1]
        return AccessKey(line2[0:9].rstrip("<"), line2[13:19], line2[21:27])

    def with_file(self, fid: int, content: bytes) -> VirtualPassport:
        """A copy with one file replaced (the SOD is not re-signed: a tampered chip)."""
        files = dict(self.files)
        files[fid] = content
        return replace(self, files=files)


def dg15(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """DG15: the Active Authentication public key (SubjectPublicKeyInfo)."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return encode(0x6F, spki)


ID_PK_ECDH = bytes.fromhex("04007F000702020102")
ID_CA_ECDH_AES_128 = bytes.fromhex("04007F00070202030202")


def dg14(public_key: ec.EllipticCurvePublicKey, ca_oid: bytes = ID_CA_ECDH_AES_128) -> bytes:
    """DG14: ChipAuthenticationPublicKeyInfo (named-curve SubjectPublicKeyInfo) and ChipAuthenticationInfo
    (version 1) in a SET OF SecurityInfo."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_info = encode(0x30, encode(0x06, ID_PK_ECDH) + spki)
    ca_info = encode(0x30, encode(0x06, ca_oid) + encode(0x02, b"\x01"))
    return encode(0x6E, encode(0x31, key_info + ca_info))


def build_passport(
    pki: ChipPki,
    face_jpeg: bytes,
    face_size: tuple[int, int],
    *,
    mrz: tuple[str, ...] = SPECIMEN_MRZ,
    pace_parameter_id: int | None = 13,
    extra_groups: dict[int, bytes] | None = None,
) -> VirtualPassport:
    groups = {1: dg1(mrz), 2: dg2(face_jpeg, face_size[0], face_size[1])}
    groups.update(extra_groups or {})
    files = {DATA_GROUPS[n][0]: content for n, content in groups.items()}
    files[EF_COM] = ef_com(tuple(sorted(groups)))
    files[EF_SOD] = sign_sod(pki, groups)
    if pace_parameter_id is not None:
        files[EF_CARD_ACCESS] = card_access(pace_parameter_id)
    return VirtualPassport(mrz, files, pace_parameter_id)


def synthetic_face(size_bytes: int = 20_000, seed: int = 7) -> tuple[bytes, tuple[int, int]]:
    """A JPEG of roughly `size_bytes` (noise, for the bench: only its size matters there)."""
    rng = np.random.default_rng(seed)
    side = 64
    while True:
        pixels = rng.integers(0, 255, (side * 5 // 4, side, 3), dtype=np.uint8)
        pixels = np.asarray(cv2.GaussianBlur(pixels, (3, 3), 0), dtype=np.uint8)
        jpeg = encode_face(pixels, quality=85)
        if len(jpeg) >= size_bytes or side > 1024:
            return jpeg, (side, side * 5 // 4)
        side += 16
