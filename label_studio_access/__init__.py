"""Label Studio access shared by the surfaces that talk to a Label Studio: the ML backend and ``autolabel``.

* :mod:`.media`: a task's image reference to bytes, under one policy (SSRF and traversal guards, auth only to Label
  Studio, deadlines and a byte budget), with :mod:`.downloads`, :mod:`.media_settings`, :mod:`.tokens`,
  :mod:`.redaction` and :mod:`.access_errors` beneath it.
* :mod:`.projects`: a project's label config and tasks, and predictions pushed into it, through label-studio-sdk.

It sits between the surfaces and ``model`` (import-linter's layers contract), so both surfaces reach the same rules
and neither imports the other.
"""
