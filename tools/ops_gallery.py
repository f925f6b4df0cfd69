"""`egate ops gallery build`: enrol photos with the real face engine into a signed gallery bundle."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import typer

from edge.bundles import BundleScope, GalleryLayout, sign_bundle
from edge.gallery_payload import SubjectEntry, encode_gallery_payload
from tools.ops_keys import load_signing_key, parse_expiry

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


def collect_photos(photos: Path) -> dict[str, list[Path]]:
    """Subject id -> photos: one folder per subject, or a CSV of `subject_id,photo_path` rows."""
    found: dict[str, list[Path]] = defaultdict(list)
    if photos.is_file():
        with open(photos, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if not row or row[0].startswith("#") or row[0] == "subject_id":
                    continue
                if len(row) < 2:
                    raise typer.BadParameter(f"{photos}: each row needs subject_id,photo_path; got {row}")
                path = Path(row[1])
                found[row[0].strip()].append(path if path.is_absolute() else photos.parent / path)
    elif photos.is_dir():
        for folder in sorted(p for p in photos.iterdir() if p.is_dir()):
            files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                found[folder.name] = files
    else:
        raise typer.BadParameter(f"--photos {photos}: no such folder or CSV file")
    if not found:
        raise typer.BadParameter(f"--photos {photos}: no subject folders with images (or CSV rows) found")
    return dict(found)


def register(app: typer.Typer) -> None:
    gallery = typer.Typer(no_args_is_help=True, help="Gallery bundles.")
    app.add_typer(gallery, name="gallery")
    register_purge(gallery)

    @gallery.command("build")
    def build(
        photos: Path = typer.Option(..., "--photos", help="Folder with one sub-folder per subject, or a CSV."),
        out: Path = typer.Option(..., "--out", help="Bundle file to write."),
        key: Path = typer.Option(..., "--key", help="Ops private key (PEM)."),
        expires: str = typer.Option("24h", "--expires", help="Gallery lifetime: 24h, 90m, 2d or ISO time."),
        scope: str = typer.Option("*", "--scope", help="SITE, SITE:GATE1,GATE2 or * (all)."),
        version: int = typer.Option(0, "--version", min=0, help="Gallery version; 0 = current Unix time."),
        models: Path | None = typer.Option(None, "--models", help="Model cache (default: $EGATE_MODEL_DIR)."),
        flight: list[str] = typer.Option([], "--flight", help="Flight tag given to every subject."),
        subject_flight: list[str] = typer.Option(
            [], "--subject-flight", help="SUBJECT=FLIGHT: a flight tag for one subject only (repeatable)."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Detect, align and embed every photo; photos with no usable face are reported, not enrolled."""
        import cv2

        from engines.config import EngineConfig
        from engines.models import default_model_dir
        from engines.pipeline import FaceEngine

        own_flights: dict[str, list[str]] = {}
        for item in subject_flight:
            subject, sep, one = item.partition("=")
            if not sep or not subject.strip() or not one.strip():
                raise typer.BadParameter(f"--subject-flight {item!r}: use SUBJECT=FLIGHT, e.g. s-0001=LH123")
            own_flights.setdefault(subject.strip(), []).append(one.strip().upper())
        private, key_id = load_signing_key(key)
        now = datetime.now(UTC)
        expires_at = parse_expiry(expires, now)
        bundle_scope = BundleScope.parse(scope)
        subjects: list[SubjectEntry] = []
        no_face: list[str] = []
        with FaceEngine.from_config(EngineConfig(), models or default_model_dir()) as engine:
            for subject_id, files in collect_photos(photos).items():
                templates = []
                for path in files:
                    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                    observation = None if image is None else engine.enroll(image)
                    if observation is None:
                        no_face.append(str(path))
                        continue
                    templates.append(np.asarray(observation.descriptor, np.float32))
                if templates:
                    tags = list(dict.fromkeys([*flight, *own_flights.get(subject_id, [])]))
                    subjects.append(SubjectEntry(subject_id, np.stack(templates), flights=tags))
            model_id = engine.model_id
        if not subjects:
            typer.echo(f"no usable face in any photo ({len(no_face)} tried): no bundle written", err=True)
            raise typer.Exit(1)
        payload = encode_gallery_payload(subjects, model_id=model_id, dim=int(subjects[0].templates.shape[1]))
        layout = GalleryLayout(
            model_id=model_id,
            dim=int(subjects[0].templates.shape[1]),
            subject_count=len(subjects),
            template_count=sum(len(s.templates) for s in subjects),
        )
        raw = sign_bundle(
            kind="gallery",
            version=version or int(now.timestamp()),
            payload=payload,
            private_key=private,
            key_id=key_id,
            scope=bundle_scope,
            issued_at=now,
            expires_at=expires_at,
            gallery=layout,
        )
        out.write_bytes(raw)
        result = {
            "out": str(out),
            "model_id": model_id,
            "subjects": layout.subject_count,
            "templates": layout.template_count,
            "no_face": no_face,
            "expires_at": expires_at.isoformat(),
        }
        if json_out:
            typer.echo(json.dumps(result))
        else:
            typer.echo(
                f"wrote {out}: {layout.subject_count} subjects, {layout.template_count} templates, "
                f"model {model_id}, expires {expires_at.isoformat()}"
            )
            for missed in no_face:
                typer.echo(f"no usable face: {missed}")


def register_purge(gallery: typer.Typer) -> None:
    @gallery.command("purge-expired")
    def purge_expired(
        state_dir: Path = typer.Option(..., "--state-dir", help="The gate's state folder (holds gallery/)."),
        key_credential: str = typer.Option("gallery.key", "--key-credential", help="Credential with the AES key."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Delete the gate's gallery file when it has expired (systemd timer; works with the daemon stopped)."""
        from edge.gallery import GalleryStore, GalleryStoreError
        from edge.secrets import CredentialError, read_credential

        try:
            store = GalleryStore(state_dir / "gallery", read_credential(key_credential))
            existed = store.path.exists()
            gallery = store.load(datetime.now(UTC))  # load() purges an expired gallery itself
        except (CredentialError, GalleryStoreError) as exc:
            typer.echo(f"egate: {exc}", err=True)
            raise typer.Exit(1) from None
        result = {
            "gallery": existed,
            "purged": existed and gallery is None,
            "version": None if gallery is None else gallery.version,
            "expires_at": None if gallery is None else gallery.expires_at.isoformat(),
        }
        store.close()
        if json_out:
            typer.echo(json.dumps(result))
        elif not existed:
            typer.echo("no gallery on this gate")
        elif result["purged"]:
            typer.echo("expired gallery purged")
        else:
            typer.echo(f"gallery v{result['version']} valid until {result['expires_at']}: kept")
