"""DeFlow workflows (steps of fan-out tasks with hooks) on Celery chords, tracked in Redis.

The workflow runtime arrives with its own issue; this package already ships so that the distribution's layout,
typing marker and imports are fixed from the start.
"""

__all__: list[str] = []
