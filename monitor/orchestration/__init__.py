"""The orchestration floor: what runs the service (the run context, the pipeline of stages, the CLI, the demo)."""
