"""Packaging: the wheel installed into a fresh venv outside the checkout, used as a person would.

Its test builds a wheel and starts the demo lane twice: it is `slow` (`make test-fast` leaves it out)."""
