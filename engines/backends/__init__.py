"""Inference backends: one interface, a registry, chosen by `engine.backend` in config."""
