"""`egate diag selftest`: run every check, through the daemon for the devices it owns, locally otherwise."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.turnstile.config import parse_scbk
from tools import selftest_checks as checks
from tools.selftest_checks import CheckResult

if TYPE_CHECKING:
    from edge.settings import Settings

DEVICE_CHECKS = ("camera", "reader", "turnstile", "mqtt")


def scbk_credential_name(settings: Settings) -> str:
    return settings.turnstile.scbk_credential


def read_scbk(settings: Settings) -> tuple[bytes | None, str]:
    """The turnstile SCBK from $CREDENTIALS_DIRECTORY, or (None, why)."""
    from edge.secrets import CredentialError, read_credential

    if not settings.turnstile.secure_channel:
        return None, ""
    name = scbk_credential_name(settings)
    try:
        return parse_scbk(read_credential(name)), ""
    except (CredentialError, ValueError) as exc:
        return None, str(exc)


def outbox_path(settings: Settings) -> Path:
    return settings.state.state_dir / "outbox.sqlite"


def gallery_file(settings: Settings) -> Path:
    from edge.gallery import GALLERY_FILE_NAME

    return settings.state.state_dir / "gallery" / GALLERY_FILE_NAME


def diag_client_id(settings: Settings) -> str:
    # Never the daemon's own id: a second session under it would disconnect the daemon (MQTT 3.1.4-2).
    return f"{settings.link.client_id_prefix}{settings.gate.site_id}-{settings.gate.gate_id}-diag"


def link_credentials(settings: Settings) -> Any:
    from edge.link import LinkCredentials
    from edge.secrets import CredentialError

    try:
        return LinkCredentials.from_credentials_dir(settings.link)
    except CredentialError:
        return None


def camera_config(settings: Settings) -> Any:
    """The `[camera]` section when this egate version's Settings has one (the lane adds it)."""
    return getattr(settings, "camera", None)


def local_device_checks(settings: Settings, engine: Any = None) -> list[CheckResult]:
    """Open camera, reader, gate controller and broker ourselves (the daemon is not running)."""
    results: list[CheckResult] = []
    camera = camera_config(settings)
    if camera is None:
        results.append(
            CheckResult(
                "camera", "WARN", "this config has no [camera] section", "add [camera] (see config/default.toml)"
            )
        )
    else:
        credential = None
        if getattr(camera, "credential", None):
            from edge.secrets import CredentialError, read_credential

            try:
                credential = read_credential(camera.credential)
            except CredentialError as exc:
                results.append(CheckResult("camera", "FAIL", str(exc), "provide the camera's credential"))
                camera = None
        if camera is not None:
            results.append(checks.check_camera(camera, engine=engine, credential=credential))
    results.append(checks.check_reader(settings.reader))
    scbk, why = read_scbk(settings)
    if settings.turnstile.secure_channel and scbk is None:
        results.append(
            CheckResult(
                "turnstile",
                "FAIL",
                f"no secure-channel key: {why}",
                f"install the gate controller's SCBK as credential {scbk_credential_name(settings)!r}",
            )
        )
    else:
        results.append(checks.check_turnstile(settings.turnstile, scbk, credential_name=scbk_credential_name(settings)))
    results.append(checks.check_mqtt(settings.link, link_credentials(settings), client_id=diag_client_id(settings)))
    return results


def devices_from_status(status: dict[str, Any]) -> list[CheckResult]:
    """Device verdicts from `status.devices` (for a daemon without `selftest.device`)."""
    results = []
    for name, info in (status.get("devices") or {}).items():
        info = info if isinstance(info, dict) else {"ok": bool(info)}
        detail = str(info.get("detail") or info.get("reason") or "")
        if info.get("ok"):
            results.append(CheckResult(name, "PASS", detail or "healthy (daemon)"))
        else:
            results.append(
                CheckResult(
                    name,
                    "FAIL",
                    detail or "reported unhealthy by the daemon",
                    f"see egate diag status and egate diag logs --since 10m; stop the daemon and run "
                    f"egate diag selftest --local for the {name} check with its fix",
                )
            )
    return results


def daemon_device_checks(client: Any, status: dict[str, Any] | None = None) -> list[CheckResult]:
    """`selftest.device` of the running daemon (it owns the devices)."""
    from edge.control import ControlError, SelftestDeviceResult

    try:
        result = SelftestDeviceResult.model_validate(client.call("selftest.device"))
    except ControlError as exc:
        if exc.error.startswith("unknown command") and status is not None:
            return devices_from_status(status)
        return [CheckResult("devices", "FAIL", f"daemon device checks failed: {exc.error}", exc.hint)]
    except ValueError as exc:
        return [CheckResult("devices", "FAIL", f"daemon answered selftest.device wrongly: {exc}", "update egate")]
    return [CheckResult(c.name, c.verdict, c.detail, c.hint) for c in result.checks]


def device_fault_from_status(status: dict[str, Any], device: str) -> CheckResult | None:
    """A FAIL when the running daemon reports `device` faulty (its detail carries the fix), else None."""
    info = (status.get("devices") or {}).get(device)
    if not isinstance(info, dict) or info.get("ok", True):
        return None
    detail = str(info.get("detail", "unhealthy"))
    # The daemon's detail reads "<condition>: <what>: <fix>"; the part after the last colon is the fix.
    what, _, fix = detail.rpartition(": ")
    return CheckResult(device, "FAIL", f"the daemon reports {device}: {what or detail}", fix or detail)


def gallery_from_status(status: dict[str, Any], now: datetime) -> CheckResult | None:
    """The gallery check from the daemon's `status` (it holds the key), when it reports one."""
    refused = device_fault_from_status(status, "gallery")
    if refused is not None:
        return refused  # a gallery refused at start (wrong model, scope): the lane is out of service
    info = status.get("gallery")
    if not isinstance(info, dict):
        return None
    if info.get("version") is None:
        return CheckResult(
            "gallery",
            "WARN",
            "the daemon has no gallery loaded: every traveller is referred",
            "push one: egate ops push",
        )
    expires = datetime.fromisoformat(str(info["expires_at"]))
    return checks.gallery_verdict(int(info["version"]), info.get("subjects"), info.get("templates"), expires, now=now)


def run_selftest(
    config_path: Path,
    *,
    golden: Path | None = None,
    use_daemon: bool = True,
    with_devices: bool = True,
) -> tuple[list[CheckResult], str]:
    """All checks in order; returns (results, mode) with mode 'daemon' or 'local'."""
    from edge.control import ControlClient, ControlError, ControlPermissionDenied, DaemonNotRunning
    from edge.secrets import CredentialError, read_credential
    from edge.settings import ConfigError, load_settings

    results = [checks.check_config(config_path)]
    try:
        settings = load_settings(config_path)
    except ConfigError:
        results += [checks.check_clock(), checks.check_disk(Path("/var/lib")), checks.check_temperature()]
        return results, "local"
    now = datetime.now(UTC)
    model_dir = settings.state.resolved_model_dir()
    results.append(checks.check_models(model_dir))
    engine = None
    if results[-1].verdict != "FAIL":
        try:
            from engines.pipeline import FaceEngine

            engine = FaceEngine.from_config(settings.engine, model_dir)
        except Exception:
            engine = None  # check_engine loads again and reports why
    try:
        results.append(
            checks.check_engine(settings.engine, model_dir, golden or checks.default_golden_media(), engine=engine)
        )
        mode = "local"
        status: dict[str, Any] | None = None
        client = ControlClient(settings.control.socket_path) if use_daemon else None
        if client is not None:
            try:
                status = client.call("status")
                mode = "daemon"
            except ControlPermissionDenied as exc:
                results.append(CheckResult("control", "FAIL", exc.error, exc.hint))
                mode = "denied"
            except DaemonNotRunning:
                mode = "local"
            except ControlError as exc:
                results.append(CheckResult("control", "FAIL", exc.error, exc.hint))
                mode = "denied"
        if with_devices:
            if mode == "daemon":
                results += daemon_device_checks(client, status)
            elif mode == "local":
                results += local_device_checks(settings, engine)
            else:
                results.append(
                    CheckResult(
                        "devices",
                        "WARN",
                        "device checks skipped: the daemon may hold the devices but cannot be asked",
                        "fix the control-socket access above and run again",
                    )
                )
    finally:
        if engine is not None:
            engine.close()
    results.append(checks.check_clock())
    results.append(checks.check_disk(settings.state.state_dir))
    outbox_fault = device_fault_from_status(status, "outbox") if status is not None else None
    results.append(outbox_fault or checks.check_outbox(outbox_path(settings), settings.outbox))
    from_daemon = gallery_from_status(status, now) if status is not None else None
    if from_daemon is not None:
        results.append(from_daemon)
    else:
        try:
            key: bytes | None = read_credential(settings.gallery.key_credential)
        except CredentialError:
            key = None
        results.append(checks.check_gallery(gallery_file(settings), key, now=now))
    results.append(checks.check_temperature())
    return results, mode


def summary(results: list[CheckResult]) -> dict[str, int]:
    counts = {"PASS": 0, "WARN": 0, "FAIL": 0}
    for r in results:
        counts[r.verdict] += 1
    return counts


def env_summary() -> dict[str, str]:
    return {"credentials_directory": os.environ.get("CREDENTIALS_DIRECTORY", "")}
