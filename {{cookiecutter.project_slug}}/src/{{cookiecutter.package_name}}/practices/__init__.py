"""The practice machinery: callbacks, diagnosis, baselines, export, sweeps, run folders... (see ARCHITECTURE.md)."""
