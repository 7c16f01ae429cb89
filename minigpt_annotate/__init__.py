"""The composition root of minigpt-annotate: the one command line that puts the core's, the backend's and the
desktop's subcommands together. It sits above `model`, `ml_backend` and `annotator`; none of them imports it."""
