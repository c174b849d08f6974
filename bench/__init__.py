"""Benchmarks of the runtime as `make dev` runs it; `make bench` (python -m bench) runs them all."""
