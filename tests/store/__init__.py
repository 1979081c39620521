"""Tests of monitor/store."""
