"""Tests of monitor/domain."""
