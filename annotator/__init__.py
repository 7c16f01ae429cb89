"""The desktop annotator (``minigpt-annotate gui``): open a folder of images, ask the model, correct its boxes, and
export COCO.

``annotator.core`` is Qt-free and tested without a display: the SQLite project store, undoable edits, merging
proposals with your own boxes, COCO export and import, the model engines (in this process or a remote server) and
bounded-memory display images. ``annotator.gui`` holds thin PySide6 widgets over it; ``gui.session`` is the only
code that talks to the store. ``annotator.commands`` registers the ``gui`` subcommand with the composition root,
:mod:`minigpt_annotate.cli`.
"""
