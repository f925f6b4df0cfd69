"""`[gallery]` config section: bundle limits, trust, matching thresholds and gallery lifetime.

The section covers both the signed bundles (size, clock skew) and the gallery they carry (threshold,
in-memory layout, expiry checks). The 1:N ambiguity rule has one home: `lane.policy.ambiguity_margin`
with `lane.search_k` candidates; the gallery's own search uses the same two values. Secrets are not here: the AES key that encrypts the gallery at
rest is read from `$CREDENTIALS_DIRECTORY/<key_credential>`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from egate.drivers.credentials import CREDENTIAL_NAME_PATTERN


class GalleryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_bundle_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, le=4 * 1024**3, description="Largest bundle payload accepted, in bytes."
    )
    clock_skew_s: float = Field(
        300.0,
        ge=0.0,
        le=3600.0,
        description="Tolerance, in seconds, between ops' clock and the gate's when checking a bundle's "
        "issued_at (not yet valid) and expires_at (expired).",
    )
    key_credential: str = Field(
        "gallery.key",
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Name of the credential (file in $CREDENTIALS_DIRECTORY) holding the 32-byte "
        "AES-256 key that encrypts the gallery at rest.",
    )
    subject_key_credential: str = Field(
        "subject-id.key",
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Name of the credential holding the key (>= 16 bytes, shared with ops) from which entry and "
        "boarding modes derive a traveller's opaque gallery subject id; not needed in exit mode.",
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=4.0,
        description="Euclidean distance at or below which a face matches a template. Unset: the "
        "calibrated threshold in the model manifest (FMR <= 0.1% on the development pairs).",
    )
    dtype: Literal["float32", "float16"] = Field(
        "float32",
        description="In-memory template type. float32 is the fastest on CPU (BLAS); float16 halves the "
        "memory for very large galleries at a slower search (see `egate bench search`).",
    )
    expiry_check_interval_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="How often the gate checks whether the active gallery expired and must be purged.",
    )
