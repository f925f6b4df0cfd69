"""The lane: policy, session machine, adapters, camera, faults, modes and the whole-daemon rig.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
