"""acme-gateway benchmarks: see bench/README.md (run with bench/run.py)."""
