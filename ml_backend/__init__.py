"""Label Studio ML backend (built in a later issue on top of :mod:`model`)."""
