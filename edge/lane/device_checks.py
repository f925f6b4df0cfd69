"""Device verdicts for the daemon's `selftest.device` control command, from the live devices' state.

The daemon owns the camera, reader, gate controller and MQTT link, so it judges them from what they
report while running (no second open). The verdict rules and fix hints are the same as those of
`egate diag selftest` when it opens the devices itself (tools/diag/selftest_checks.py imports the hints
from here), so a technician reads the same advice either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egate.drivers.turnstile.base import GateStatus
from egate.edge.service.control_socket import DeviceCheck, SelftestDeviceResult

CAMERA_MIN_FPS = 8.0  # below this a walking traveller crosses the capture zone in too few frames
DARK_MEAN = 40.0  # mean grey level of a frame (0..255)
BRIGHT_MEAN = 215.0

HINT_CAMERA_FPS = (
    "low frame rate: use a USB 3 port or camera.fourcc = 'MJPG', lower camera.width/height, check CPU load"
)
HINT_CAMERA_DARK = "check the lens cap and lane lighting; raise the exposure"
HINT_CAMERA_BRIGHT = "shield the camera from sunlight/backlight; lower exposure"
HINT_READER_PORT = (
    "check the reader's cable and reader.serial_url (ls -l /dev/serial/by-id/); the user opening it needs "
    "the dialout group"
)
HINT_TURNSTILE_PORT = "check the gate controller's serial cable and turnstile.url (ls -l /dev/serial/by-id/)"
HINT_TURNSTILE_SILENT = (
    "check the controller is powered, the RS-485 wiring (A/B), turnstile.baud and the bus address "
    "(turnstile.address for OSDP, turnstile.device_id for Modbus)"
)
HINT_TURNSTILE_INSTALL = "finish commissioning: set turnstile.install_mode = false once the controller holds the SCBK"


def hint_turnstile_key(credential_name: str) -> str:
    return (
        f"the SCBK in credential {credential_name!r} does not match the gate controller's: install the right "
        "key (or commission the controller with turnstile.install_mode = true once)"
    )


HINT_MQTT_PLAIN = "set link.tls = true outside a lab: outcomes travel in clear"

MQTT_HINTS = {
    "unreachable": "start the broker or fix link.host/link.port; check routes and firewall (port {port})",
    "tls_failure": "install the CA that signed the broker as credential link.ca_credential, and check link.host "
    "matches the broker's certificate",
    "bad_credentials": "fix link.username and the password credential link.password_credential",
    "not_authorised": "ask ops to allow this gate's client id / certificate in the broker ACL",
    "protocol": "set link.protocol = '3.1.1' (or auto)",
    "refused": "the broker refused the connection: check its log; retry later",
    "lost": "the connection dropped: check the network; the link reconnects by itself",
}


def camera_problem(fps: float, expected_fps: float, mean_level: float | None) -> tuple[str, str] | None:
    """The camera's warning rule, for the daemon's live check and `egate diag selftest` alike: what is
    wrong (to append to the detail) and its fix, or None when frame rate and exposure are fine."""
    wanted = expected_fps if expected_fps > 0 else CAMERA_MIN_FPS
    if fps < min(wanted * 0.8, CAMERA_MIN_FPS) or fps < CAMERA_MIN_FPS * 0.5:
        return f"expected about {wanted:.0f} fps", HINT_CAMERA_FPS
    if mean_level is not None and mean_level < DARK_MEAN:
        return "image too dark", HINT_CAMERA_DARK
    if mean_level is not None and mean_level > BRIGHT_MEAN:
        return "image overexposed", HINT_CAMERA_BRIGHT
    return None


def camera_check(
    stats: Mapping[str, Any], *, expected_fps: float = 0.0, mean_level: float | None = None
) -> DeviceCheck:
    """From `egate.drivers.camera.CameraStats` (as a dict) and, when known, the last frame's mean grey level."""
    state = str(stats.get("state", "?"))
    fps = float(stats.get("fps", 0.0))
    size = f"{stats.get('width', 0)}x{stats.get('height', 0)}"
    detail = f"{stats.get('kind', 'camera')} {state}, {size}, {fps:.1f} fps"
    if mean_level is not None:
        detail += f", mean level {mean_level:.0f}/255"
    if state != "streaming":
        why = stats.get("last_error") or state
        return DeviceCheck(
            name="camera",
            verdict="FAIL",
            detail=f"{detail} ({why})",
            hint="check the camera's cable/network and camera.location; the daemon reopens it by itself",
        )
    problem = camera_problem(fps, expected_fps, mean_level)
    if problem is not None:
        what, hint = problem
        return DeviceCheck(name="camera", verdict="WARN", detail=f"{detail}; {what}", hint=hint)
    return DeviceCheck(name="camera", verdict="PASS", detail=detail)


def reader_check(url: str | None, *, connected: bool, last_error: str | None = None) -> DeviceCheck:
    """From the serial reader's `connected` event and its last error message."""
    if not url:
        return DeviceCheck(name="reader", verdict="PASS", detail="no serial reader configured")
    if connected:
        return DeviceCheck(name="reader", verdict="PASS", detail=f"{url} open")
    return DeviceCheck(
        name="reader",
        verdict="FAIL",
        detail=f"{url} not open ({last_error or 'no error reported'})",
        hint=HINT_READER_PORT,
    )


def turnstile_check(status: GateStatus | None) -> DeviceCheck:
    """From any gate driver's `status()` (None: no gate controller built)."""
    if status is None:
        return DeviceCheck(name="turnstile", verdict="FAIL", detail="no gate controller", hint=HINT_TURNSTILE_PORT)
    where = f"{status.driver} {status.endpoint}"
    serial = status.serial
    if status.link_state == "up":
        security = {"secure_channel": ", secure channel up", "plaintext": ", PLAINTEXT", "none": ""}
        detail = f"{where}: online{security[status.link_security]}"
        if status.commissioning:
            return DeviceCheck(
                name="turnstile",
                verdict="WARN",
                detail=f"{detail}; install mode / default key",
                hint=HINT_TURNSTILE_INSTALL,
            )
        if status.link_security == "plaintext":
            return DeviceCheck(
                name="turnstile",
                verdict="WARN",
                detail=detail,
                hint="set turnstile.secure_channel = true outside the bench",
            )
        return DeviceCheck(name="turnstile", verdict="PASS", detail=detail)
    if status.link_auth_failed:
        return DeviceCheck(
            name="turnstile",
            verdict="FAIL",
            detail=f"{where}: the controller answers but refuses our key",
            hint=hint_turnstile_key(status.key_credential or "turnstile.scbk"),
        )
    if serial is not None and not serial.open and serial.last_error:
        return DeviceCheck(
            name="turnstile",
            verdict="FAIL",
            detail=f"cannot open {where}: {serial.last_error}",
            hint=HINT_TURNSTILE_PORT,
        )
    received = serial.rx_bytes if serial is not None else 0
    return DeviceCheck(
        name="turnstile",
        verdict="FAIL",
        detail=f"{where}: link {status.link_state}" + (f", {received} bytes received" if serial is not None else ""),
        hint=HINT_TURNSTILE_SILENT,
    )


def mqtt_check(
    *,
    enabled: bool,
    connected: bool,
    host: str,
    port: int,
    error_category: str | None,
    error_message: str | None,
    tls: bool = True,
) -> DeviceCheck:
    """From `MqttLink.connected` and `MqttLink.last_error` (category, message)."""
    if not enabled:
        return DeviceCheck(
            name="mqtt",
            verdict="WARN",
            detail="link disabled (link.enabled = false)",
            hint="standalone gate: outcomes stay in the outbox",
        )
    if connected and not tls:
        # The same verdict as the tool's own connection test: a plain link is a lab set-up.
        return DeviceCheck(
            name="mqtt",
            verdict="WARN",
            detail=f"connected to {host}:{port} (plain)",
            hint=HINT_MQTT_PLAIN,
        )
    if connected:
        return DeviceCheck(name="mqtt", verdict="PASS", detail=f"connected to {host}:{port} (TLS)")
    hint = MQTT_HINTS.get(error_category or "", "check the network and the broker; see egate diag mqtt")
    return DeviceCheck(
        name="mqtt",
        verdict="FAIL",
        detail=error_message or f"not connected to {host}:{port}",
        hint=hint.format(port=port),
    )


def device_result(*checks: DeviceCheck) -> SelftestDeviceResult:
    """The `selftest.device` handler's reply."""
    return SelftestDeviceResult(checks=list(checks))
