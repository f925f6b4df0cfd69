"""Generate `config/default.toml` from the pydantic models: every setting, its default and its description.

Generated rather than hand-written so the documented defaults can never drift from the code;
a test checks the committed file equals this output (`make config-doc` regenerates it).
"""

from __future__ import annotations

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from egate.edge.settings import Settings
from egate.tools.config.toml_writer import toml_value

HEADER = """\
# egate configuration: every setting with its default and what it does.
# Generated from the code by `make config-doc`; copy the parts you change into /etc/egate/egate.toml.
# Validate with `egate config check FILE`; any setting can be overridden by the environment as
# EGATE_<SECTION>__<KEY>=value (e.g. EGATE_LINK__PORT=1883). Secrets are never set here: they are
# files in $CREDENTIALS_DIRECTORY (systemd LoadCredential=), named in the sections that use them.
# Required in every gate's file: [gate] site_id and gate_id (the values below are examples).
# "none" switches an optional setting off (e.g. buzzer_output = "none" for a gate without a buzzer).
"""


def _bounds(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for cls, attr, sign in ((Ge, "ge", ">="), (Gt, "gt", ">"), (Le, "le", "<="), (Lt, "lt", "<")):
            if isinstance(meta, cls):
                parts.append(f"{sign} {getattr(meta, attr)}")
    return f" ({', '.join(parts)})" if parts else ""


def _section(model: type[BaseModel], instance: BaseModel, path: str, out: list[str]) -> None:
    nested: list[tuple[str, type[BaseModel], BaseModel]] = []
    out.append(f"\n[{path}]")
    doc = (model.__doc__ or "").strip().splitlines()
    if doc and not doc[0].startswith("!"):
        out.append(f"# {doc[0]}")
    for name, info in model.model_fields.items():
        if info.exclude:  # derived from another section (lane.gate_id from gate.gate_id): not set here
            continue
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            nested.append((name, type(value), value))
            continue
        out.append(f"# {info.description or ''}{_bounds(info)}")
        if value is None:
            out.append(f'{name} = "none"')
        else:
            out.append(f"{name} = {toml_value(value)}")
    for name, sub_model, sub in nested:
        _section(sub_model, sub, f"{path}.{name}", out)


def render_default_toml() -> str:
    settings = Settings()
    out = [HEADER.rstrip("\n")]
    out.append(f"\nschema_version = {settings.schema_version}")
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            out.append(f"\n# --- {info.description} ---")
            _section(type(value), value, name, out)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render_default_toml(), end="")
