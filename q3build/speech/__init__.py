"""Speech QA: checkpoints and conversion, validation of a built server, parity, benchmarks."""
