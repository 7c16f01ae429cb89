"""`minigpt-annotate autolabel`: box proposals for a whole dataset, headless, resumable.

A surface beside the Label Studio backend and the desktop app, on top of :mod:`model`:

* :mod:`.sources` reads what to label (a folder, a COCO file, a Label Studio export, a JSONL manifest) into
  :class:`~autolabel.sources.Item` s, and :mod:`.asks` decides what the model is asked about each;
* an engine (:mod:`.engine`: the in-process ``local`` one; :mod:`.ray_engine` on Ray Data) turns items into
  results, streamed;
* :mod:`.journal` commits each finished image to SQLite before it counts as done, so a rerun resumes;
* :mod:`.outputs` writes the COCO, Label Studio, failures and summary files from the journal, atomically.
"""
