"""Write the JSON Schema of every contract that leaves the box: MQTT payloads and control-API replies.

`docs/schemas/` holds the generated files so ops and integrators can validate or generate clients
without running egate; a test checks they equal this output (`make schemas` regenerates them):

    mqtt/<topic>.json              egate.edge.uplink.messages.message_schemas() (`bundle/ack` -> bundle-ack)
    control/request.json           one request line
    control/response.json          one response line (success or failure envelope)
    control/replies/<cmd>.json     egate.edge.lane.replies.reply_schemas(): the `result` of each command
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from egate.edge.lane.replies import reply_schemas
from egate.edge.service.control_socket import ControlRequest, ControlResponse
from egate.edge.uplink.messages import message_schemas

# Sub-folders this module owns: `write` replaces every .json in them.
OWNED = ("mqtt", "control")


def _file_stem(topic: str) -> str:
    """`bundle/<kind>` -> `bundle-kind`: a topic key as a file name."""
    return topic.replace("/", "-").replace("<", "").replace(">", "")


def _text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def schema_files() -> dict[str, str]:
    """Relative path -> file content of every exported schema."""
    files = {f"mqtt/{_file_stem(topic)}.json": _text(s) for topic, s in message_schemas().items()}
    files["control/request.json"] = _text(ControlRequest.model_json_schema())
    files["control/response.json"] = _text(TypeAdapter(ControlResponse).json_schema())
    files.update({f"control/replies/{cmd}.json": _text(s) for cmd, s in reply_schemas().items()})
    return files


def stale_files(folder: Path) -> list[str]:
    """Files under `folder` that are missing, differ from the models, or are no longer generated."""
    wanted = schema_files()
    present = {
        p.relative_to(folder).as_posix() for owned in OWNED for p in (folder / owned).rglob("*.json") if p.is_file()
    }
    stale = [rel for rel, text in wanted.items() if not (folder / rel).is_file() or (folder / rel).read_text() != text]
    return sorted(stale + sorted(present - set(wanted)))


def write_schema_files(folder: Path) -> list[str]:
    """Write every schema under `folder`, removing files of contracts that no longer exist; the paths written."""
    wanted = schema_files()
    for owned in OWNED:
        for old in (folder / owned).rglob("*.json"):
            if old.relative_to(folder).as_posix() not in wanted:
                old.unlink()
    for rel, text in wanted.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return sorted(wanted)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/schemas")
    written = write_schema_files(out)
    print(f"{len(written)} schemas written under {out}")
