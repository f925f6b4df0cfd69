"""Gate driver plug-ins: one module per kind of gate controller, each exposing `DRIVER` (a `GateDriver`).

`egate.drivers.turnstile.registry` finds every module here; adding a driver is one new module with its
config model (whose `type` field names it) and its tests.
"""
