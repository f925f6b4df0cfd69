"""`egate ops bundle inspect`: what a bundle holds, whether its signature checks, and counts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import typer
from cryptography.exceptions import InvalidSignature

from egate.edge.gallery.payload import GalleryPayloadError, decode_gallery_payload
from egate.edge.trust.bundles import SIGNATURE_CONTEXT, BundleRejected, parse_header, split_envelope
from egate.edge.trust.keys import PublicKeyEntry, TrustStore


def inspect_bundle(raw: bytes, public_keys: list[PublicKeyEntry]) -> dict[str, Any]:
    envelope = split_envelope(raw)
    header = parse_header(envelope.header_bytes)
    payload = memoryview(raw)[envelope.payload_offset :]
    keys = {k.key_id: k for k in public_keys}
    signature = "no key given (use --pub or --trust-dir)"
    if header.key_id in keys:
        try:
            keys[header.key_id].load().verify(envelope.signature, SIGNATURE_CONTEXT + envelope.header_bytes)
            signature = "valid"
        except InvalidSignature:
            signature = "INVALID"
    elif keys:
        signature = f"key {header.key_id} not among the given keys"
    info: dict[str, Any] = {
        "header": header.model_dump(mode="json", exclude_none=True),
        "signature": signature,
        "payload_length_ok": len(payload) == header.payload_length,
        "payload_sha256_ok": hashlib.sha256(payload).hexdigest() == header.payload_sha256,
    }
    if header.kind == "gallery":
        try:
            decoded = decode_gallery_payload(payload, check_values=True)
            info["counts"] = {
                "subjects": decoded.meta.subject_count,
                "templates": decoded.meta.template_count,
                "with_validity_window": 0 if decoded.valid_from is None else decoded.meta.subject_count,
                "tagged": len(decoded.tags),
            }
        except GalleryPayloadError as exc:
            info["payload_error"] = str(exc)
    elif header.kind in ("keys", "command"):
        try:
            info["payload"] = json.loads(bytes(payload))
        except (ValueError, RecursionError) as exc:
            info["payload_error"] = str(exc)
    else:
        info["counts"] = {"config_lines": bytes(payload).count(b"\n")}
    return info


def register(app: typer.Typer) -> None:
    bundle = typer.Typer(no_args_is_help=True, help="Inspect signed bundles.")
    app.add_typer(bundle, name="bundle")

    @bundle.command("inspect")
    def inspect(
        file: Path = typer.Argument(..., help="Bundle file."),
        pub: list[Path] = typer.Option([], "--pub", help="Public key file(s) to check the signature with."),
        trust_dir: Path | None = typer.Option(None, "--trust-dir", help="A gate's trust folder to check with."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Header, signature check and counts.

        Exit 1 when the bundle is broken, its signature fails, or its key is not among the keys given
        (--pub, --trust-dir): an unchecked signature is not trusted.
        """
        keys = [PublicKeyEntry.model_validate_json(p.read_text()) for p in pub]
        if trust_dir is not None:
            store = TrustStore(trust_dir)
            keys += [PublicKeyEntry.model_validate_json(json.dumps(e)) for e in _entries(store)]
        try:
            info = inspect_bundle(file.read_bytes(), keys)
        except BundleRejected as exc:
            typer.echo(json.dumps({"error": exc.code.value, "message": exc.message}) if json_out else str(exc))
            raise typer.Exit(1) from None
        if json_out:
            typer.echo(json.dumps(info))
        else:
            h = info["header"]
            typer.echo(f"{h['kind']} v{h['version']} for {h['scope']} signed by {h['key_id']}: {info['signature']}")
            typer.echo(
                f"valid {h['issued_at']} .. {h['expires_at']}, payload {h['payload_length']} bytes, "
                f"length ok {info['payload_length_ok']}, sha256 ok {info['payload_sha256_ok']}"
            )
            if "counts" in info:
                typer.echo("counts: " + ", ".join(f"{k} {v}" for k, v in info["counts"].items()))
        # Only a signature checked against a key we trust counts: unknown key or no key given is exit 1 too.
        bad = info["signature"] != "valid" or not info["payload_sha256_ok"] or "payload_error" in info
        if bad:
            if not json_out:
                if info["signature"] != "valid":
                    typer.echo(f"error: signature not trusted: {info['signature']}", err=True)
                    typer.echo(
                        "fix: pass the signer's public key (--pub KEY.pub.json) or a gate's --trust-dir", err=True
                    )
                else:
                    typer.echo("error: the payload does not match its signed header (altered or truncated)", err=True)
            raise typer.Exit(1)


def _entries(store: TrustStore) -> list[dict[str, Any]]:
    data = json.loads(store.path.read_text()) if store.path.exists() else {"keys": []}
    return list(data["keys"])
