"""Inference backend plug-ins: one module per backend, each exposing `BACKEND` (a `BackendPlugin`).

`egate.engines.backends.registry` finds every module here; `engine.backend` and
`engine.fallback_backend` accept their names and a backend with settings gets its own `[engine.<name>]`
table. Adding a backend is one new module and its tests. A module here must import without its runtime
(import it inside the functions that need it): config validation imports every plug-in.
"""
