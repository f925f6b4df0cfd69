"""Shipped configuration files (demo and default config, broker ACLs), installed as package data
`egate.config` so an installed egate finds them through importlib.resources, without a checkout."""
