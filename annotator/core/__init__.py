"""The desktop annotator's state and logic, free of Qt so that it is tested without a screen: the project store,
undoable edits, runs of the model, COCO exchange, display images and engines (local model or remote server)."""
