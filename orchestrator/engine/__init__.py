"""The optimization engine: the policy and the router that enforces it, the step loop, scoring with its cache, the
executor (one concurrency limit, every attempt stored), the run store, metrics, summaries and the audit."""

STORE_FILE = "run.sqlite"
"""The run store's file in a run directory (here, so a run directory can be recognised without importing the
engine's modules)."""
