"""egate engines package."""
