"""The one rule for the ids that name a site, a gate or a command.

Site and gate ids are segments of MQTT topics (docs/mqtt.md), so they must never hold '+', '#' or '/'
(a wildcard inside an id would silently widen a subscription, MQTT 5.0 section 4.7). Config, the wire
payloads and signed bundles all check ids against this pattern.
"""

from __future__ import annotations

import re

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
ID_WORDS = "1-64 letters, digits, '-' or '_', starting with a letter or digit"
# A bundle scope may name every site at once with '*'.
ID_OR_ANY_PATTERN = r"^(\*|" + ID_PATTERN[1:-1] + ")$"

_ID = re.compile(ID_PATTERN)


def is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None
