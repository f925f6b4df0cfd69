"""Face engine: model cache, backends, detector, alignment, pipeline, Jetson and TensorRT seams.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
