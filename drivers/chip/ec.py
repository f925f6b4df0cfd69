"""Minimal prime-curve arithmetic for PACE generic mapping (ICAO Doc 9303 part 11 §4.4.3.3.1).

The mapped generator G' = s*G + H is a point addition on a generator no library exposes, and the
key agreement that follows runs on that non-standard generator; `cryptography` offers ECDH only on
named curves with their own generator, so this module does the few operations PACE-GM needs (Jacobian
coordinates, constant curve parameters, every received point checked to lie on the curve). Its
scalar multiplication is not constant-time: it handles ephemeral keys of one session.
"""

from __future__ import annotations

from dataclasses import dataclass

Point = tuple[int, int] | None  # affine; None is the point at infinity


class PointError(ValueError):
    """A point is malformed, not on the curve, or the point at infinity."""


@dataclass(frozen=True)
class Curve:
    name: str
    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int

    @property
    def size(self) -> int:
        return (self.p.bit_length() + 7) // 8

    @property
    def generator(self) -> tuple[int, int]:
        return (self.gx, self.gy)

    def contains(self, point: Point) -> bool:
        if point is None:
            return False
        x, y = point
        return 0 <= x < self.p and 0 <= y < self.p and (y * y - (x * x * x + self.a * x + self.b)) % self.p == 0

    def encode(self, point: Point) -> bytes:
        if point is None:
            raise PointError("cannot encode the point at infinity")
        return b"\x04" + point[0].to_bytes(self.size, "big") + point[1].to_bytes(self.size, "big")

    def decode(self, data: bytes) -> tuple[int, int]:
        if len(data) != 1 + 2 * self.size or data[0] != 0x04:
            raise PointError("expected an uncompressed point (04 || X || Y)")
        point = (int.from_bytes(data[1 : 1 + self.size], "big"), int.from_bytes(data[1 + self.size :], "big"))
        if not self.contains(point):
            raise PointError("point is not on the curve")
        return point

    # ---- arithmetic (Jacobian X, Y, Z with x = X/Z^2, y = Y/Z^3) ------------------------------------

    def _double(self, P: tuple[int, int, int]) -> tuple[int, int, int]:
        X, Y, Z = P
        p = self.p
        if Y == 0 or Z == 0:
            return (0, 1, 0)
        yy = Y * Y % p
        s = 4 * X * yy % p
        zz = Z * Z % p
        m = (3 * X * X + self.a * zz * zz) % p
        x3 = (m * m - 2 * s) % p
        y3 = (m * (s - x3) - 8 * yy * yy) % p
        z3 = 2 * Y * Z % p
        return (x3, y3, z3)

    def _add(self, P: tuple[int, int, int], Q: tuple[int, int, int]) -> tuple[int, int, int]:
        p = self.p
        if P[2] == 0:
            return Q
        if Q[2] == 0:
            return P
        X1, Y1, Z1 = P
        X2, Y2, Z2 = Q
        z1z1 = Z1 * Z1 % p
        z2z2 = Z2 * Z2 % p
        u1 = X1 * z2z2 % p
        u2 = X2 * z1z1 % p
        s1 = Y1 * Z2 * z2z2 % p
        s2 = Y2 * Z1 * z1z1 % p
        if u1 == u2:
            return self._double(P) if s1 == s2 else (0, 1, 0)
        h = (u2 - u1) % p
        r = (s2 - s1) % p
        hh = h * h % p
        hhh = h * hh % p
        v = u1 * hh % p
        x3 = (r * r - hhh - 2 * v) % p
        y3 = (r * (v - x3) - s1 * hhh) % p
        z3 = h * Z1 * Z2 % p
        return (x3, y3, z3)

    def _affine(self, P: tuple[int, int, int]) -> Point:
        X, Y, Z = P
        if Z == 0:
            return None
        zinv = pow(Z, -1, self.p)
        zinv2 = zinv * zinv % self.p
        return (X * zinv2 % self.p, Y * zinv2 * zinv % self.p)

    def add(self, P: Point, Q: Point) -> Point:
        if P is None:
            return Q
        if Q is None:
            return P
        return self._affine(self._add((P[0], P[1], 1), (Q[0], Q[1], 1)))

    def multiply(self, k: int, P: Point) -> Point:
        if P is None or k % self.n == 0:
            return None
        k %= self.n
        result = (0, 1, 0)
        addend = (P[0], P[1], 1)
        for bit in bin(k)[2:]:
            result = self._double(result)
            if bit == "1":
                result = self._add(result, addend)
        return self._affine(result)


NIST_P256 = Curve(
    "secp256r1",
    p=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
    a=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFC,
    b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    gx=0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    gy=0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    n=0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
)

BRAINPOOL_P256R1 = Curve(
    "brainpoolP256r1",
    p=0xA9FB57DBA1EEA9BC3E660A909D838D726E3BF623D52620282013481D1F6E5377,
    a=0x7D5A0975FC2C3057EEF67530417AFFE7FB8055C126DC5C6CE94A4B44F330B5D9,
    b=0x26DC5C6CE94A4B44F330B5D9BBD77CBF958416295CF7E1CE6BCCDC18FF8C07B6,
    gx=0x8BD2AEB9CB7E57CB2C4B482FFC81B7AFB9DE27E1E3BD23C23A4453BD9ACE3262,
    gy=0x547EF835C3DAC4FD97F8461A14611DC9C27745132DED8E545C1D54C72F046997,
    n=0xA9FB57DBA1EEA9BC3E660A909D838D718C397AA3B561A6F7901E0E82974856A7,
)

# Standardized domain parameter ids of ICAO Doc 9303 part 11 §9.5.1 (table 6).
CURVES_BY_PARAMETER_ID: dict[int, Curve] = {12: NIST_P256, 13: BRAINPOOL_P256R1}
