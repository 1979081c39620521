"""Tests of dags/."""
