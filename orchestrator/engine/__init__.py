"""The optimization engine: the policy and the router that enforces it, the step loop, scoring with its cache, the
executor (one concurrency limit, every attempt stored), the run store, metrics, summaries and the audit."""
