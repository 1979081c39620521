"""Tests of the repository as a whole: the README, the walls, docker/, the GPU script."""
