"""Take the README's screenshots of the real desktop app (offscreen Qt): `python scripts/screenshot_annotator.py`.

Opens a folder of synthetic shapes, loads the shipped tiny model, runs [detection], accepts one proposal (solid)
and leaves the others as proposals (dashed), then saves ``docs/annotator.png``.
"""

from __future__ import annotations

from shot_window import ROOT, shapes_window


def main() -> None:
    from annotator.core import edits

    shot = shapes_window(images=12)
    window, session, app = shot.window, shot.session, shot.app
    best = shot.busiest_image()  # the image where the tiny model finds the most shapes
    first = session.images()[0].id
    session.push(edits.ReviewedChange("Mark reviewed", first, True, False))
    window.go_to(best)
    proposals = [row for row in session.boxes(best) if row.is_proposal]
    if proposals:
        session.push(edits.accept(proposals[:1]))
        window.canvas.select({proposals[0].id})
    window.ai_panel.show_answer("[detection] square, circle, triangle: dashed boxes are proposals; accepted is solid.")
    app.processEvents()
    out = ROOT / "docs" / "annotator.png"
    window.grab().save(str(out))
    print(out)
    window.close()


if __name__ == "__main__":
    main()
