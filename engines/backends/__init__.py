"""Inference backends: one interface (`base`), plug-ins (`plugins/`) found by `registry`, chosen by `engine.backend`."""
