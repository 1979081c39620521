"""The Dash class-health dashboard (create_app / run in dashboards.app)."""
