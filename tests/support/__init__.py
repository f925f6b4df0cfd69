"""Test helpers shared by several areas (brokers, daemons, galleries, link, reader, turnstile, rigs).

A helper used by one area lives in that area's folder instead; fixtures reach tests through the area's
conftest.py (or, for session fixtures of several areas, the top-level conftest's `pytest_plugins`)."""
