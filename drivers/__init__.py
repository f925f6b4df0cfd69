"""egate drivers package."""
