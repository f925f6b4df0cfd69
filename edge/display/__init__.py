"""The traveller's screen: a kiosk page that shows the lane's state and guidance, in the traveller's language.

- `feed`: in the daemon, a write-only UNIX socket that streams the lane's view (`model.LaneView`) and a
  heartbeat with the supervisor's view; the daemon never reads from it, so nothing reaches the gate.
- `server`: `egate display serve`, its own process: reads the feed and serves the kiosk page (loopback)
  over Server-Sent Events, and optionally the read-only supervisor page.
- `screens`: which screen a lane view shows (a pure function); `languages`: catalogues and the
  ICAO state -> language map. The page itself lives in `static/`, its texts in `i18n/`.
"""
