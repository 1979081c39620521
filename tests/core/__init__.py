"""Tests of monitor/core."""
