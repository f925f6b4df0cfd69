"""egate edge package."""
