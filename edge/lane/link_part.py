"""The MQTT link as a lane part: forwards the outbox, keeps the retained status, hands ops' bundles and
commands to the session part's ops handler. Closes after the devices (reverse start order), so what
they report while stopping still reaches ops before `stopped`."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from egate.edge.lane.gallery_part import GalleryPart
from egate.edge.lane.outbox_part import OutboxPart
from egate.edge.lane.part import Part
from egate.edge.lane.session_part import SessionPart
from egate.edge.service.daemon import Health, StartError
from egate.edge.service.secrets import CredentialError
from egate.edge.settings import Settings
from egate.edge.uplink.link import LinkCredentials, MqttLink
from egate.edge.uplink.messages import StatusPayload

log = structlog.get_logger(__name__)


class LinkPart(Part):
    name = "link"

    def __init__(
        self,
        settings: Settings,
        *,
        outbox: OutboxPart,
        session: SessionPart,
        gallery: GalleryPart,
        status_payload: Callable[[], StatusPayload],
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._session = session
        self._gallery = gallery
        self._status_payload = status_payload
        self._link: MqttLink | None = None

    @property
    def link(self) -> MqttLink | None:
        """None when the link is disabled in config or not started."""
        return self._link

    def start(self) -> None:
        cfg = self._settings.link
        if not cfg.enabled:
            log.warning("link_disabled", detail="outcomes stay in the outbox until link.enabled = true")
            return
        try:
            credentials = LinkCredentials.from_credentials_dir(cfg)
        except CredentialError as exc:
            raise StartError(f"link: {exc}") from None
        gate = self._settings.gate
        self._link = MqttLink(
            cfg,
            gate.site_id,
            gate.gate_id,
            self._outbox.outbox,
            self._status_payload,
            credentials,
            bundle_dir=self._settings.state.state_dir / "bundles-incoming",
        )
        self._session.ops.attach(self._link, self._gallery.key)
        self._link.start()

    def close(self) -> None:
        if self._link is not None:
            self._link.close(clean=True)

    def health(self) -> Health:
        if self._link is None:
            return Health(True, "disabled")
        err = self._link.last_error
        return Health(True, "connected" if self._link.connected else f"offline: {err.message if err else 'connecting'}")
