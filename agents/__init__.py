"""Everything that talks to an LLM, and nothing that talks gRPC: one module per agent role and their model door
(``model_client``). Import the modules themselves; this package imports nothing, so loading one agent is cheap."""
