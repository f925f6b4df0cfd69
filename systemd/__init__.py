"""The systemd units egate ships, installed as package data `egate.systemd` so an installed egate can
show or compare them (`egate diag engines --device-check`) without a checkout."""
