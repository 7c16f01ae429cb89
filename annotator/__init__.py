"""PySide6 desktop annotator (built in a later issue on top of :mod:`model`)."""
