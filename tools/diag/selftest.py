"""`egate diag selftest`: run every check, through the daemon for the devices it owns, locally otherwise."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from egate.edge.service.secrets import read_credential
from egate.tools.diag import selftest_checks as checks
from egate.tools.diag.selftest_checks import CheckResult

if TYPE_CHECKING:
    from egate.edge.settings import Settings

DEVICE_CHECKS = ("camera", "reader", "turnstile", "mqtt")


def outbox_path(settings: Settings) -> Path:
    return settings.state.state_dir / "outbox.sqlite"


def gallery_file(settings: Settings) -> Path:
    from egate.edge.gallery.store import GALLERY_FILE_NAME

    return settings.state.state_dir / "gallery" / GALLERY_FILE_NAME


def diag_client_id(settings: Settings) -> str:
    # Never the daemon's own id: a second session under it would disconnect the daemon (MQTT 3.1.4-2).
    return f"{settings.link.client_id_prefix}{settings.gate.site_id}-{settings.gate.gate_id}-diag"


def link_credentials(settings: Settings) -> Any:
    return link_credentials_or_error(settings)[0]


def link_credentials_or_error(settings: Settings) -> tuple[Any, str]:
    """The link's credentials, or (None, the error naming the credential that is missing)."""
    from egate.edge.service.secrets import CredentialError
    from egate.edge.uplink.link import LinkCredentials

    try:
        return LinkCredentials.from_credentials_dir(settings.link), ""
    except CredentialError as exc:
        return None, str(exc)


def page_reference(settings: Settings) -> bool:
    """Whether entry mode can compare with the document page's portrait (a page image is configured)."""
    return settings.reader.page_camera is not None


DAEMON_START_HINT = "start it: systemctl start egate; why it stopped: journalctl -u egate -n 50 (egate diag logs)"


def daemon_missing_verdict(socket_path: Path, *, local: bool) -> CheckResult:
    """The `daemon` row when nothing answers on the control socket: the gate serves nobody."""
    why = "devices checked locally below" if local else "device rows below opened the devices locally"
    return CheckResult(
        "daemon",
        "FAIL",
        f"the egate daemon is not running (no answer on {socket_path}): the gate serves nobody; {why}",
        DAEMON_START_HINT,
    )


def lane_verdict(status: dict[str, Any]) -> CheckResult:
    """The `lane` row from the daemon's `status`: is this lane serving travellers now?"""
    state = str(status.get("state", "?")).lower()
    mode = str(status.get("mode", "?"))
    reasons = [str(r) for r in status.get("out_of_service_reasons") or []]
    if status.get("maintenance") and any(r.startswith("maintenance: closed") for r in reasons):
        return CheckResult(
            "lane",
            "FAIL",
            f"closed by ops: travellers are not served ({'; '.join(reasons)})",
            "ops reopens it: egate ops cmd set-mode --mode open --gate GATE --site SITE --signing-key KEY",
        )
    if status.get("maintenance"):
        return CheckResult(
            "lane",
            "FAIL",
            f"in maintenance: travellers are not served ({'; '.join(reasons) or 'set by a technician or ops'})",
            "when the work is done: egate diag maintenance off (or the ops command set_mode back to the lane mode)",
        )
    if state == "alarm":
        return CheckResult(
            "lane",
            "FAIL",
            f"alarm: {status.get('alarm') or 'tailgate or forced door'}; entry locked until cleared",
            "an officer checks the lane and clears the alarm (control command alarm.clear); it also clears "
            "by itself after lane.alarm_clear_s",
        )
    if state == "emergency":
        return CheckResult(
            "lane",
            "FAIL",
            "emergency input active: all leaves released, no traveller is checked",
            "clear the emergency input at the gate controller once the emergency is over",
        )
    if not status.get("in_service", False):
        return CheckResult(
            "lane",
            "FAIL",
            f"out of service: {'; '.join(reasons) or 'no reason reported'}",
            "fix the device named above (its row below says how); the lane returns to service by itself",
        )
    return _pass_lane(f"in service, {mode} mode, state {state}")


def _pass_lane(detail: str) -> CheckResult:
    return CheckResult("lane", "PASS", detail, "")


def daemon_is_running(settings: Settings) -> bool:
    """True when the daemon answers on its control socket (it then owns the devices)."""
    from egate.edge.service.control_socket import ControlClient, ControlError, DaemonNotRunning

    try:
        ControlClient(settings.control.socket_path, timeout_s=5.0).ping()
    except DaemonNotRunning:
        return False
    except ControlError:
        return True  # something answers there but refuses us: a daemon, not a free device
    return True


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
            from egate.edge.service.secrets import CredentialError

            try:
                credential = read_credential(camera.credential)
            except CredentialError as exc:
                results.append(CheckResult("camera", "FAIL", str(exc), "provide the camera's credential"))
                camera = None
        if camera is not None:
            results.append(checks.check_camera(camera, engine=engine, credential=credential))
    results.append(checks.check_reader(settings.reader))
    results.append(checks.check_turnstile(settings.turnstile, read_credential))
    credentials, credentials_error = link_credentials_or_error(settings)
    results.append(
        checks.check_mqtt(
            settings.link, credentials, client_id=diag_client_id(settings), credentials_error=credentials_error
        )
    )
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
    from egate.edge.lane.replies import parse_reply
    from egate.edge.service.control_socket import ControlError, SelftestDeviceResult

    try:
        result = parse_reply(SelftestDeviceResult, client.call("selftest.device"))
    except ControlError as exc:
        if exc.error.startswith("unknown command") and status is not None:
            return devices_from_status(status)
        return [CheckResult("devices", "FAIL", f"daemon device checks failed: {exc.error}", exc.hint)]
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


def gallery_from_status(status: dict[str, Any], now: datetime, *, page_ref: bool = False) -> CheckResult | None:
    """The gallery check from the daemon's `status` (it holds the key), when it reports one."""
    refused = device_fault_from_status(status, "gallery")
    if refused is not None:
        return refused  # a gallery refused at start (wrong model, scope): the lane is out of service
    info = status.get("gallery")
    if not isinstance(info, dict):
        return None
    if info.get("version") is None:
        return checks.no_gallery_verdict(
            str(status.get("mode", "exit")),
            page_reference=page_ref,
            where="loaded in the daemon (none pushed yet, or the last one expired and was purged)",
        )
    expires = datetime.fromisoformat(str(info["expires_at"]).replace("Z", "+00:00"))
    return checks.gallery_verdict(int(info["version"]), info.get("subjects"), info.get("templates"), expires, now=now)


def run_selftest(
    config_path: Path,
    *,
    golden: Path | None = None,
    use_daemon: bool = True,
    with_devices: bool = True,
) -> tuple[list[CheckResult], str]:
    """All checks in order; returns (results, mode) with mode 'daemon' or 'local'."""
    from egate.edge.service.control_socket import ControlClient, ControlError, ControlPermissionDenied, DaemonNotRunning
    from egate.edge.service.secrets import CredentialError
    from egate.edge.settings import ConfigError, load_settings

    results = [checks.check_config(config_path)]
    try:
        settings = load_settings(config_path)
    except ConfigError:
        results += [checks.check_clock(), checks.check_disk(Path("/var/lib")), checks.check_temperature()]
        return results, "local"
    now = datetime.now(timezone.utc)
    model_dir = settings.state.resolved_model_dir()
    results.append(checks.check_models(model_dir))
    engine = None
    if results[-1].verdict != "FAIL":
        try:
            from egate.engines.pipeline import FaceEngine

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
                from egate.edge.lane.replies import StatusReply, parse_reply

                status = parse_reply(StatusReply, client.call("status")).model_dump(mode="json")
                mode = "daemon"
            except ControlPermissionDenied as exc:
                results.append(CheckResult("control", "FAIL", exc.error, exc.hint))
                mode = "denied"
            except DaemonNotRunning:
                mode = "local"
                results.append(daemon_missing_verdict(settings.control.socket_path, local=False))
            except ControlError as exc:
                results.append(CheckResult("control", "FAIL", exc.error, exc.hint))
                mode = "denied"
        if use_daemon is False:
            results.append(daemon_missing_verdict(settings.control.socket_path, local=True))
        if status is not None:
            results.append(lane_verdict(status))
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
    page_ref = page_reference(settings)
    from_daemon = gallery_from_status(status, now, page_ref=page_ref) if status is not None else None
    if from_daemon is not None:
        results.append(from_daemon)
    else:
        try:
            key: bytes | None = read_credential(settings.gallery.key_credential)
        except CredentialError:
            key = None
        results.append(
            checks.check_gallery(gallery_file(settings), key, now=now, mode=settings.gate.mode, page_reference=page_ref)
        )
    results.append(checks.check_temperature())
    return results, mode


def summary(results: list[CheckResult]) -> dict[str, int]:
    counts = {"PASS": 0, "WARN": 0, "FAIL": 0}
    for r in results:
        counts[r.verdict] += 1
    return counts


def env_summary() -> dict[str, str]:
    return {"credentials_directory": os.environ.get("CREDENTIALS_DIRECTORY", "")}
