"""egate tools package."""
