"""The desktop annotator's widgets: thin PySide6 views over `annotator.core`; the session is the only writer of the
project store."""
