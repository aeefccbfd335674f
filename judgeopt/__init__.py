"""judgeopt: multi-criterion LLM-judge prompt optimization with textual gradients, as gRPC agent services."""
