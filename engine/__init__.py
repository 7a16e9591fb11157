"""leadpulse: real-time lead scoring for real-estate teams.

Data path: event -> validate -> features -> score -> alert -> sinks.
Start reading at ``engine/processor.py`` (one batch through the whole path).
"""

__version__ = "0.1.0"
