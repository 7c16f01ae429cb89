"""The keyboard shortcuts, in labelme / X-AnyLabeling conventions, as data: the window binds them and the help
dialog lists them from this one table, so the two never disagree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shortcut:
    action: str  # the window's action name
    keys: tuple[str, ...]  # Qt key sequences, portable text form
    text: str  # what it does, for the menu and the help dialog
    canvas_only: bool = False  # keys that mean something else in text fields (Return, Backspace) act on the canvas


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("open_folder", ("Ctrl+U",), "Open a folder of images"),
    Shortcut("save", ("Ctrl+S",), "Save now (everything is also saved on every change)"),
    Shortcut("export_coco", ("Ctrl+Shift+E",), "Export COCO"),
    Shortcut("next_image", ("D",), "Next image"),
    Shortcut("previous_image", ("A",), "Previous image"),
    Shortcut("next_unreviewed", ("Ctrl+Shift+D",), "Next unreviewed image"),
    Shortcut("previous_unreviewed", ("Ctrl+Shift+A",), "Previous unreviewed image"),
    Shortcut("next_riskiest", ("Ctrl+Shift+R",), "Riskiest image still to review (its weakest proposal scores lowest)"),
    Shortcut("toggle_reviewed", ("Ctrl+Alt+K",), "Mark the image reviewed (or not)"),
    Shortcut("draw_box", ("R", "Ctrl+R"), "Draw a box (drag on the image)"),
    Shortcut("edit_mode", ("Escape",), "Stop drawing; select and edit boxes"),
    Shortcut("delete", ("Delete", "Backspace"), "Delete the selected boxes (rejects proposals)", canvas_only=True),
    Shortcut("relabel", ("Ctrl+E",), "Choose a label for the selected boxes (type to search, Enter to apply)"),
    Shortcut("undo", ("Ctrl+Z",), "Undo"),
    Shortcut("redo", ("Ctrl+Y", "Ctrl+Shift+Z"), "Redo"),
    Shortcut("run_model", ("I",), "Run the model on this image (task and query of the AI panel)"),
    Shortcut("focus_query", ("Ctrl+L",), "Type a query for the model"),
    Shortcut("batch_run", ("Ctrl+B",), "Run detection over the whole folder"),
    Shortcut("cancel_run", ("Ctrl+.",), "Cancel the running model job"),
    Shortcut("accept_selected", ("Return", "Enter"), "Accept the selected proposals", canvas_only=True),
    Shortcut("accept_all", ("Ctrl+Return",), "Accept all shown proposals on this image"),
    Shortcut("reject_all", ("Ctrl+Backspace",), "Reject all proposals on this image", canvas_only=True),
    Shortcut("fit", ("Ctrl+F",), "Fit the image in the window"),
    Shortcut("zoom_in", ("Ctrl++", "Ctrl+="), "Zoom in (or the mouse wheel)"),
    Shortcut("zoom_out", ("Ctrl+-",), "Zoom out (or the mouse wheel)"),
    Shortcut("help", ("F1",), "Show these shortcuts"),
    # desktop-review (issue 17): review flow and window basics
    Shortcut("review_next", ("Ctrl+K",), "Mark the image reviewed and go to the next unreviewed image"),
    Shortcut("quit", ("Ctrl+Q",), "Quit"),
    # desktop-canvas (issue 17): canvas basics and labels
    *(Shortcut(f"label_{n}", (str(n),), f"Make label {n} of the list the current label") for n in range(1, 10)),
    Shortcut("zoom_100", ("Ctrl+0",), "Zoom to 100% (one image pixel per screen pixel)"),
    Shortcut("fit_width", ("Ctrl+Shift+F",), "Fit the image's width in the window"),
    Shortcut("toggle_boxes", ("Ctrl+H",), "Show or hide all boxes"),
    Shortcut("toggle_labels", ("Ctrl+Shift+H",), "Show or hide the boxes' labels"),
    Shortcut("toggle_scores", ("Ctrl+Alt+H",), "Show or hide the proposals' scores"),
    Shortcut("copy", ("Ctrl+C",), "Copy the selected boxes"),
    Shortcut("paste", ("Ctrl+V",), "Paste the copied boxes onto this image (as your own boxes)"),
    Shortcut("duplicate", ("Ctrl+D",), "Duplicate the selected boxes (shifted a little)"),
)

BY_ACTION = {shortcut.action: shortcut for shortcut in SHORTCUTS}

# The window's menus, by title: the actions each lists, in order (names of SHORTCUTS' actions, or of the window's
# actions without a key, such as load_model).
MENUS: dict[str, list[str]] = {
    "&File": ["open_folder", "save", "import_coco", "export_coco", "export_reviewed"],
    "&Edit": ["undo", "redo", "draw_box", "edit_mode", "delete", "relabel", "copy", "paste", "duplicate"],
    "&Image": [
        "next_image",
        "previous_image",
        "next_unreviewed",
        "previous_unreviewed",
        "next_riskiest",
        "toggle_reviewed",
    ],
    "&View": [
        "fit",
        "fit_width",
        "zoom_100",
        "zoom_in",
        "zoom_out",
        "toggle_boxes",
        "toggle_labels",
        "toggle_scores",
    ],
    "&Model": ["load_model", "connect_server", "run_model", "focus_query", "batch_run", "cancel_run"],
    "&Review": ["accept_selected", "accept_all", "reject_all"],
    "&Help": ["help"],
}
