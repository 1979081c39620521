"""The foundation floor: errors, settings, dates, files, secrets, image sources, statistics, verdicts."""
