"""Turnstile / gate controller drivers (OSDP control panel over serial)."""
