"""Each user's path through the tools (technician, central ops, integrator), end to end against the
demo rig.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
