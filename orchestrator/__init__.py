"""The orchestrator: owns the run and decides what each agent sees; reaches agents only over gRPC."""
