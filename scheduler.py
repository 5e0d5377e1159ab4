"""APScheduler wiring (written below)."""
