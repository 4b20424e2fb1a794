"""Celery shells around ``agent`` and ``store`` (see the knowledge-base service)."""
