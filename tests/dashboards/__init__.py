"""Tests of dashboards/."""
