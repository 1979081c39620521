"""Tests of monitor/orchestration (the stages, the CLI, the demo)."""
