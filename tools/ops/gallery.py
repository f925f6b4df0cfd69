"""`egate ops gallery build`: enrol photos with the real face engine into a signed gallery bundle."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import typer

from egate.edge.gallery.payload import SubjectEntry, encode_gallery_payload
from egate.edge.trust.bundles import GalleryLayout
from egate.tools.ops.keys import BundleSigner

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


def collect_photos(photos: Path) -> dict[str, list[Path]]:
    """Subject id -> photos: one folder per subject, or a CSV of `subject_id,photo_path` rows.

    CSV format (UTF-8): one row per photo, `subject_id,photo_path`; a first row `subject_id,photo_path`
    and rows starting with `#` are skipped; relative paths are relative to the CSV's folder; a subject
    may have several rows (several templates).
    """
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


def subject_id_maker(subject_key: Path | None, ids_as_given: bool) -> Callable[[str], str]:
    """Label -> subject id: the keyed hash gates use (egate.edge.lane.adapters), or the label itself when asked."""
    if ids_as_given:
        if subject_key is not None:
            raise typer.BadParameter("give --subject-key or --ids-as-given, not both")
        return lambda label: label
    if subject_key is None:
        raise typer.BadParameter(
            "subject ids are derived from the labels with the subject-id key the gates share: give --subject-key "
            "FILE (or EGATE_OPS_SUBJECT_KEY), or --ids-as-given when the labels already are opaque ids"
        )
    from egate.edge.lane.adapters import HashedSubjectLookup

    try:
        lookup = HashedSubjectLookup(subject_key.read_bytes(), lambda: None)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"--subject-key {subject_key}: {exc}") from None
    return lookup.subject_for_label


def photo_problem(path: Path) -> str:
    """Why a photo cannot even be tried (missing, unreadable, truncated JPEG), or ''."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if not data:
        return "empty file"
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        return "corrupt JPEG (the file is truncated: no end-of-image marker)"
    return ""


class _Progress:
    """`enrolling 12/300 photos` on stderr, only on a terminal and only after the first second."""

    def __init__(self, enabled: bool, total: int) -> None:
        import sys
        import time

        self._stream = sys.stderr
        self.enabled = enabled and sys.stderr.isatty()
        self.total = total
        self.count = 0
        self._clock = time.monotonic
        self.began = time.monotonic()
        self.shown = False

    def step(self, path: Path) -> None:
        self.count += 1
        if self.enabled and self._clock() - self.began > 1.0:
            self._stream.write(f"\renrolling photo {self.count}/{self.total} ({path.name})\033[K")
            self._stream.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            self._stream.write("\r\033[K")
            self._stream.flush()


def register(app: typer.Typer) -> None:
    gallery = typer.Typer(no_args_is_help=True, help="Gallery bundles.")
    app.add_typer(gallery, name="gallery")
    register_purge(gallery)

    @gallery.command("build")
    def build(
        photos: Path = typer.Option(
            ...,
            "--photos",
            help="Folder with one sub-folder of photos per subject (named by subject id), or a CSV file of "
            "subject_id,photo_path rows (paths relative to the CSV).",
        ),
        out: Path = typer.Option(..., "--out", help="Bundle file to write."),
        key: Path = typer.Option(..., "--signing-key", "--key", help="Ops signing key (Ed25519 private PEM)."),
        expires: str = typer.Option("24h", "--expires", help="Gallery lifetime: 24h, 90m, 2d or ISO time."),
        scope: str = typer.Option("*", "--scope", help="SITE, SITE:GATE1,GATE2 or * (all)."),
        version: int = typer.Option(0, "--version", min=0, help="Gallery version; 0 = current Unix time."),
        models: Path | None = typer.Option(
            None, "--model-dir", "--models", help="Model cache (default $EGATE_MODEL_DIR or .cache/models)."
        ),
        allow_dropped: bool = typer.Option(
            False, "--allow-dropped", help="Write the bundle even when some subjects have no usable photo."
        ),
        flight: list[str] = typer.Option([], "--flight", help="Flight tag given to every subject."),
        subject_key: Path | None = typer.Option(
            None,
            "--subject-key",
            envvar="EGATE_OPS_SUBJECT_KEY",
            help="The subject-id key shared with the gates: subject ids become keyed hashes of the folder or "
            "CSV labels (doc:ISSUER:NUMBER, pass:PNR:NAME, or any other label).",
        ),
        ids_as_given: bool = typer.Option(
            False, "--ids-as-given", help="Use the labels themselves as subject ids (they must already be opaque)."
        ),
        subject_flight: list[str] = typer.Option(
            [], "--subject-flight", help="SUBJECT=FLIGHT: a flight tag for one subject only (repeatable)."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Detect, align and embed every photo into a signed gallery bundle.

        Subject ids are opaque by construction: keyed hashes of the labels (--subject-key), unless
        --ids-as-given says the labels already are opaque ids. Photos that cannot be read or show no
        usable face are listed with the reason. When a subject is left without any template nothing is
        written and the exit code is 1 (unless --allow-dropped); a bundle written with dropped photos
        still exits 1 so scripts notice.
        """
        import cv2

        from egate.engines.config import EngineConfig
        from egate.engines.models import default_model_dir
        from egate.engines.pipeline import FaceEngine

        to_id = subject_id_maker(subject_key, ids_as_given)
        own_flights: dict[str, list[str]] = {}
        for item in subject_flight:
            subject, sep, one = item.partition("=")
            if not sep or not subject.strip() or not one.strip():
                raise typer.BadParameter(f"--subject-flight {item!r}: use SUBJECT=FLIGHT, e.g. s-0001=LH123")
            own_flights.setdefault(subject.strip(), []).append(one.strip().upper())
        signer = BundleSigner.from_options(key, scope, expires)
        subjects: list[SubjectEntry] = []
        no_face: list[str] = []
        problems: list[dict[str, str]] = []  # every photo not enrolled, with why
        dropped: list[str] = []  # subjects left with no template
        wanted = collect_photos(photos)
        total = sum(len(files) for files in wanted.values())
        progress = _Progress(not json_out, total)
        with FaceEngine.from_config(EngineConfig(), models or default_model_dir()) as engine:
            for subject_id, files in wanted.items():
                templates = []
                for path in files:
                    progress.step(path)
                    why = photo_problem(path)
                    image = None if why else cv2.imread(str(path), cv2.IMREAD_COLOR)
                    observation = None
                    if image is None:
                        why = why or "cannot be decoded (corrupt or truncated image file)"
                    else:
                        observation = engine.enroll(image)
                    if observation is None:
                        why = why or "no usable face (none found, several, or too small/blurred)"
                        problems.append({"subject_id": subject_id, "photo": str(path), "problem": why})
                        no_face.append(str(path))
                        continue
                    templates.append(np.asarray(observation.descriptor, np.float32))
                if templates:
                    tags = list(dict.fromkeys([*flight, *own_flights.get(subject_id, [])]))
                    subjects.append(SubjectEntry(to_id(subject_id), np.stack(templates), flights=tags))
                else:
                    dropped.append(subject_id)
            model_id = engine.model_id
        progress.done()
        for problem in problems:
            typer.echo(f"error: {problem['photo']} ({problem['subject_id']}): {problem['problem']}", err=True)
        if not subjects or (dropped and not allow_dropped):
            reason = (
                f"no usable face in any photo ({len(no_face)} tried)"
                if not subjects
                else f"{len(dropped)} of {len(wanted)} subjects have no usable photo: {', '.join(dropped)}"
            )
            if json_out:
                typer.echo(json.dumps({"ok": False, "error": reason, "problems": problems, "dropped": dropped}))
            else:
                typer.echo(f"error: {reason}: no bundle written", err=True)
                typer.echo(
                    "fix: replace the photos listed above (one clear frontal face each), or pass "
                    "--allow-dropped to build without those subjects",
                    err=True,
                )
            raise typer.Exit(1)
        payload = encode_gallery_payload(subjects, model_id=model_id, dim=int(subjects[0].templates.shape[1]))
        layout = GalleryLayout(
            model_id=model_id,
            dim=int(subjects[0].templates.shape[1]),
            subject_count=len(subjects),
            template_count=sum(len(s.templates) for s in subjects),
        )
        raw = signer.sign("gallery", payload, version=version, gallery=layout)
        out.write_bytes(raw)
        result = {
            "ok": not problems,
            "out": str(out),
            "model_id": model_id,
            "subjects": layout.subject_count,
            "subjects_given": len(wanted),
            "templates": layout.template_count,
            "no_face": no_face,
            "subject_ids": "as_given" if ids_as_given else "derived",
            "problems": problems,
            "dropped": dropped,
            "expires_at": signer.expires_at.isoformat(),
        }
        if json_out:
            typer.echo(json.dumps(result))
        else:
            typer.echo(
                f"wrote {out}: {layout.subject_count} of {len(wanted)} subjects, {layout.template_count} templates, "
                f"model {model_id}, expires {signer.expires_at.astimezone():%Y-%m-%d %H:%M %Z}"
            )
            if problems:
                typer.echo(f"{len(problems)} photo(s) not enrolled: see the errors above", err=True)
        if problems:
            raise typer.Exit(1)


def register_purge(gallery: typer.Typer) -> None:
    @gallery.command("purge-expired")
    def purge_expired(
        state_dir: Path = typer.Option(..., "--state-dir", help="The gate's state folder (holds gallery/)."),
        key_credential: str = typer.Option("gallery.key", "--key-credential", help="Credential with the AES key."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Delete the gate's gallery file when it has expired (systemd timer; works with the daemon stopped)."""
        from egate.edge.gallery.store import GalleryStore, GalleryStoreError
        from egate.edge.service.secrets import CredentialError, read_credential

        try:
            store = GalleryStore(state_dir / "gallery", read_credential(key_credential))
            existed = store.path.exists()
            gallery = store.load(datetime.now(timezone.utc))  # load() purges an expired gallery itself
        except (CredentialError, GalleryStoreError) as exc:
            typer.echo(f"error: {exc}\nfix: run as root with CREDENTIALS_DIRECTORY holding the gallery key", err=True)
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
