"""Start a real Label Studio 1.23.2 on 127.0.0.1 and drive it through its HTTP API, for end-to-end tests.

Plain module, no pytest fixtures: wrap it in whatever fixture scope a test needs, e.g.

    with LabelStudioServer(tmp_path / "ls") as ls:
        project = ls.create_project("e2e", LABEL_CONFIG)
        tasks = ls.import_images(project, [png_a, png_b])
        ml_id = ls.connect_ml_backend(project, "http://127.0.0.1:9090", "minigpt")
        ls.retrieve_predictions(project)

Label Studio runs from its own venv (see `find_label_studio`), as a subprocess in its own process group, with a
sqlite database in a fresh data dir, and an environment built from scratch (nothing LABEL_STUDIO_*, HOST, PORT or
proxy-related leaks in from the caller). The harness talks to it with the legacy token (`Authorization: Token ...`),
enabled for the organization at creation; a Personal Access Token is minted through the API as well.
On Linux the LS process gets SIGTERM when the thread that started it dies (PR_SET_PDEATHSIG), so a killed test run
leaves no server behind; start it from the main thread (or a thread that outlives it).
What it relies on was checked against Label Studio 1.23.2, the version scripts/setup-label-studio.sh installs.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests
from patience import HANG_S

REPO_ROOT = Path(__file__).resolve().parents[1]
LABEL_STUDIO_VERSION = "1.23.2"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-label-studio.sh"
VENV_ENV_VAR = "MINIGPT_LABEL_STUDIO_VENV"

# Bounds for a hang, not speed claims (see patience.py): a busy machine starts Django slowly.
DEFAULT_STARTUP_TIMEOUT = float(HANG_S)
DEFAULT_REQUEST_TIMEOUT = 120.0
# Calls that make Label Studio call the ML backend wait for it: LS's own /predict timeout is 100 s (ML_TIMEOUT_PREDICT).
PREDICT_REQUEST_TIMEOUT = 150.0
INSTALL_TIMEOUT = 900.0
LOG_TAIL_LINES = 60
# Access tokens live 300 s; refresh a bit earlier.
ACCESS_TOKEN_MAX_AGE = 240.0

# Only these are passed through from the caller's environment; everything else is set explicitly.
_PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "SSL_CERT_FILE")
_SERVER_LINE = re.compile(r"Starting development server at http://[^:/\s]+:(\d+)/")


class LabelStudioError(RuntimeError):
    """Label Studio failed to install, start, or answer an API call as expected."""


class _PortTaken(LabelStudioError):
    pass


def _venv_dir() -> Path:
    configured = os.environ.get(VENV_ENV_VAR)
    if configured:
        return Path(configured).expanduser().resolve()
    return REPO_ROOT / ".ls-venv"


def _installed_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.is_file():
        return None
    try:
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_label_studio(install: bool = True) -> Path:
    """The `label-studio` executable of the LS venv: env MINIGPT_LABEL_STUDIO_VENV (a venv dir) or <repo>/.ls-venv.

    When it is missing (or holds another version) and `install` is true, runs scripts/setup-label-studio.sh into that
    venv (about a minute and 1 GB from PyPI) and returns the result; otherwise raises LabelStudioError.
    """
    venv = _venv_dir()
    exe = venv / "bin" / "label-studio"

    def ready() -> bool:
        return exe.is_file() and os.access(exe, os.X_OK) and _installed_version(venv) == LABEL_STUDIO_VERSION

    if ready():
        return exe
    if not install:
        found = _installed_version(venv)
        state = f"it holds label-studio {found}" if found else f"{exe} does not exist"
        raise LabelStudioError(
            f"label-studio {LABEL_STUDIO_VERSION} is not installed in {venv} ({state}). "
            f"Run `bash scripts/setup-label-studio.sh` (LABEL_STUDIO_VENV picks the venv) or set {VENV_ENV_VAR}."
        )
    env = dict(os.environ, LABEL_STUDIO_VENV=str(venv))
    try:
        proc = subprocess.run(
            ["bash", str(SETUP_SCRIPT)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabelStudioError(f"{SETUP_SCRIPT.name} did not finish within {INSTALL_TIMEOUT:.0f} s") from exc
    if proc.returncode != 0 or not ready():
        output = (proc.stdout + proc.stderr).strip()[-4000:]
        raise LabelStudioError(
            f"installing label-studio {LABEL_STUDIO_VERSION} into {venv} failed (exit {proc.returncode}):\n{output}"
        )
    return exe


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the process that started it dies, e.g. a killed pytest."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _body_excerpt(response: requests.Response, limit: int = 2000) -> str:
    text = response.text
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class LabelStudioServer:
    """A Label Studio server subprocess on 127.0.0.1 plus a small API client. Use as a context manager.

    Args:
        data_dir: LS data dir (sqlite db, uploads, log file `label-studio.log`). None: a fresh temporary dir that is
            deleted by stop() unless `keep_data_dir` (and kept when startup fails, for its log). A given dir is
            created if needed and never deleted; reusing one that LS already migrated turns a ~25 s cold start into
            a ~3 s warm one.
        executable: the `label-studio` executable; None: `find_label_studio(install)`.
        port: None picks a free port.
        local_files_root: when given, LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT=<it>, so tasks
            may point at `/data/local-files/?d=<path relative to it>`.
        startup_timeout: seconds to wait for /health.
        request_timeout: default timeout of every HTTP call (calls that reach the ML backend get a longer one).
        extra_env: more environment for LS (e.g. {"ML_TIMEOUT_PREDICT": "30", "WEBHOOK_TIMEOUT": "5"}).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        executable: str | os.PathLike[str] | None = None,
        port: int | None = None,
        local_files_root: str | os.PathLike[str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        stop_timeout: float = 15.0,
        username: str = "ci@example.com",
        password: str = "ci-password-0123456789",
        legacy_token: str = "ci-legacy-token-0123456789",
        extra_env: Mapping[str, str] | None = None,
        install: bool = True,
        keep_data_dir: bool = False,
    ) -> None:
        if len(legacy_token) <= 5:
            raise ValueError("Label Studio ignores a user token of 5 characters or fewer")
        self._data_dir_arg = Path(data_dir) if data_dir is not None else None
        self._executable_arg = Path(executable) if executable is not None else None
        self._port_arg = port
        self.local_files_root = Path(local_files_root).resolve() if local_files_root is not None else None
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.stop_timeout = stop_timeout
        self.username = username
        self.password = password
        self.legacy_token = legacy_token
        self.extra_env = dict(extra_env or {})
        self.install = install
        self.keep_data_dir = keep_data_dir

        self.data_dir: Path | None = None
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._owns_data_dir = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._pat: str | None = None
        self._access: tuple[str, float] | None = None
        self._session = requests.Session()
        self._session.trust_env = False  # never route 127.0.0.1 through a proxy from the environment

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LabelStudioServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self.port is None:
            raise LabelStudioError("Label Studio is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.data_dir is None:
            raise LabelStudioError("Label Studio is not started")
        return self.data_dir / "label-studio.log"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start LS, wait for /health, check the legacy token, mint the Personal Access Token."""
        if self._proc is not None:
            raise LabelStudioError("Label Studio is already started")
        executable = self._executable_arg or find_label_studio(self.install)
        if self._data_dir_arg is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="ls-data-"))
            self._owns_data_dir = True
        else:
            self.data_dir = self._data_dir_arg.resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        try:
            # The port can be taken between our pick and LS's bind (after ~25 s of migrations on a cold start): LS
            # then moves to the next port, or exits with "That port is already in use". Start again on a new port.
            for attempt in range(3):
                try:
                    self._launch(executable, self._port_arg or free_port())
                    break
                except _PortTaken:
                    self._terminate()
                    if self._port_arg is not None or attempt == 2:
                        raise
            self.startup_seconds = time.monotonic() - began
            self._check_auth()
            self._pat = self._mint_personal_access_token()
        except BaseException:
            self._terminate()  # the data dir stays, so its log can be read
            self._owns_data_dir = False
            raise

    def _environment(self, port: int) -> dict[str, str]:
        assert self.data_dir is not None
        env = {key: os.environ[key] for key in _PASSTHROUGH_ENV if key in os.environ}
        env.update(
            {
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.legacy_token,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                # what LS reports to the ML backend as `hostname` in /setup
                "LABEL_STUDIO_HOST": f"http://127.0.0.1:{port}",
                # a backend on 127.0.0.1 needs both: the ML url check and the auto-created <ml url>/webhook check
                "ML_BLOCK_LOCAL_IP": "false",
                "SSRF_PROTECTION_ENABLED": "false",
                "LATEST_VERSION_CHECK": "false",
                "COLLECT_ANALYTICS": "false",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                # LS creates ~/.local/share/label-studio before it reads --data-dir, and an analytics user id under
                # ~/.config/label-studio: keep both inside the data dir
                "XDG_DATA_HOME": str(self.data_dir / "xdg"),
                "XDG_CONFIG_HOME": str(self.data_dir / "xdg"),
                "XDG_CACHE_HOME": str(self.data_dir / "xdg"),
                "PYTHONUNBUFFERED": "1",
                # always explicit, so LS does not autodetect a ./mydata or ./label-studio-data folder
                "LOCAL_FILES_SERVING_ENABLED": "true" if self.local_files_root else "false",
            }
        )
        if self.local_files_root is not None:
            env["LOCAL_FILES_DOCUMENT_ROOT"] = str(self.local_files_root)
        env.update(self.extra_env)
        return env

    def _launch(self, executable: Path, port: int) -> None:
        """Start the process and wait until /health answers."""
        assert self.data_dir is not None
        self.port = port
        command = [
            str(executable),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(self.data_dir),
        ]
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        self._log_file.write(f"\n=== harness: {' '.join(command)}\n".encode())
        self._log_file.flush()
        log_offset = self.log_path.stat().st_size
        self._proc = subprocess.Popen(
            command,
            cwd=self.data_dir,
            env=self._environment(port),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so stop() reaches every child
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            new_log = self._read_log_from(log_offset)
            if code is not None:
                error = _PortTaken if "That port is already in use" in new_log else LabelStudioError
                raise error(
                    f"Label Studio exited with code {code} during startup. Last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            match = _SERVER_LINE.search(new_log)
            if match and int(match.group(1)) != port:
                raise _PortTaken(f"port {port} was taken; Label Studio moved to port {match.group(1)}")
            try:
                response = self._session.get(f"{self.url}/health", timeout=2.0)
                if response.status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise LabelStudioError(
                    f"Label Studio did not answer {self.url}/health within {self.startup_timeout:.0f} s. "
                    f"Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def _read_log_from(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            # children left behind in the group (if any) go too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """SIGTERM to LS's process group, SIGKILL after `stop_timeout`; remove a temporary data dir. Idempotent."""
        self._terminate()
        self._pat = None
        self._access = None
        if self._owns_data_dir and self.data_dir is not None and not self.keep_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._owns_data_dir = False

    # ------------------------------------------------------------------ tokens

    def _check_auth(self) -> None:
        me = self.request("GET", "/api/current-user/whoami").json()
        if me.get("email") != self.username:
            raise LabelStudioError(f"legacy token belongs to {me.get('email')!r}, expected {self.username!r}")

    def _mint_personal_access_token(self) -> str:
        # One valid PAT per user: keep it next to the database so a reused data dir gets the same one back.
        assert self.data_dir is not None
        saved = self.data_dir / "harness-pat.txt"
        response = self.request("POST", "/api/token/", ok=(201, 409), json={})
        if response.status_code == 201:
            token = str(response.json()["token"])
            saved.write_text(token, encoding="utf-8")
            return token
        if saved.is_file():
            return saved.read_text(encoding="utf-8").strip()
        raise LabelStudioError(f"{self.username} already has a PAT that this harness did not save ({saved})")

    @property
    def personal_access_token(self) -> str:
        """The user's Personal Access Token (a JWT refresh token; `Bearer <PAT>` alone is rejected with 401)."""
        if self._pat is None:
            raise LabelStudioError("Label Studio is not started")
        return self._pat

    def access_token(self, fresh: bool = False) -> str:
        """A short-lived (300 s) access token exchanged for the PAT via /api/token/refresh/; cached for 240 s."""
        now = time.monotonic()
        if not fresh and self._access is not None and now - self._access[1] < ACCESS_TOKEN_MAX_AGE:
            return self._access[0]
        response = self.request(
            "POST", "/api/token/refresh/", auth=False, ok=(200,), json={"refresh": self.personal_access_token}
        )
        token = str(response.json()["access"])
        self._access = (token, now)
        return token

    # ------------------------------------------------------------------ raw HTTP

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: Iterable[int] = (200, 201, 204),
        timeout: float | None = None,
        auth: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """One API call with the legacy token; raises LabelStudioError (with LS's response body) on other statuses."""
        url = path if path.startswith("http") else f"{self.url}{path}"
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            headers.setdefault("Authorization", f"Token {self.legacy_token}")
        try:
            response = self._session.request(
                method, url, headers=headers, timeout=timeout or self.request_timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise LabelStudioError(f"{method} {url} failed: {exc}\nLast lines of LS log:\n{self._safe_tail()}") from exc
        if response.status_code not in tuple(ok):
            raise LabelStudioError(f"{method} {url} -> HTTP {response.status_code}: {_body_excerpt(response)}")
        return response

    def _safe_tail(self) -> str:
        return self.log_tail(20) if self.data_dir is not None else "(not started)"

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise LabelStudioError(
                f"{method} {path} -> HTTP {response.status_code} is not JSON: {_body_excerpt(response)}"
            ) from exc

    # ------------------------------------------------------------------ projects and tasks

    def create_project(self, title: str, label_config: str, **fields: Any) -> int:
        """POST /api/projects; LS validates the config (HTTP 400 with its message -> LabelStudioError)."""
        project = self._json("POST", "/api/projects", json={"title": title, "label_config": label_config, **fields})
        return int(project["id"])

    def project(self, project_id: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/projects/{project_id}"))

    def import_images(self, project_id: int, paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
        """Upload image files, one multipart request per file, so each new task maps to its file for certain.

        Returns the created tasks in the order of `paths` (as /api/tasks lists them: `id`, `data`
        {"image": "/data/upload/<project>/<8 hex>-<file name>"}, ...), each with an added key `source_path`.
        The stored name cannot be matched back reliably: LS sanitizes it ("img 0.png" -> "img_0.png").
        """
        created: list[tuple[int, Path]] = []
        for item in paths:
            path = Path(item)
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            with open(path, "rb") as fh:
                result = self._json(
                    "POST",
                    f"/api/projects/{project_id}/import",
                    params={"return_task_ids": "true"},
                    files={"file": (path.name, fh, mime)},
                    timeout=max(self.request_timeout, 120.0),
                )
            task_ids = result.get("task_ids") or []
            if len(task_ids) != 1:
                raise LabelStudioError(f"importing {path} created tasks {task_ids}, expected exactly one: {result}")
            created.append((int(task_ids[0]), path))
        by_id = {int(task["id"]): task for task in self.tasks(project_id)}
        out: list[dict[str, Any]] = []
        for task_id, path in created:
            if task_id not in by_id:
                raise LabelStudioError(f"task {task_id} (from {path}) is not listed in project {project_id}")
            out.append({**by_id[task_id], "source_path": str(path)})
        return out

    def add_local_storage(
        self, project_id: int, path: str | os.PathLike[str], sync: bool = False, regex_filter: str = r".*"
    ) -> int:
        """Local Files import storage on `path`, a subdirectory of `local_files_root` (LS refuses the root itself).

        LS serves `/data/local-files/?d=<path relative to the root>` only for files under such a storage (404
        otherwise). With `sync`, every file matching `regex_filter` becomes a task.
        """
        if self.local_files_root is None:
            raise LabelStudioError("start LabelStudioServer with local_files_root to use Local Files storage")
        storage = self._json(
            "POST",
            "/api/storages/localfiles/",
            json={
                "project": project_id,
                "path": str(Path(path).resolve()),
                "title": "harness local files",
                "use_blob_urls": True,
                "regex_filter": regex_filter,
            },
        )
        storage_id = int(storage["id"])
        if sync:
            self.request("POST", f"/api/storages/localfiles/{storage_id}/sync", timeout=max(self.request_timeout, 120))
        return storage_id

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """All tasks of a project via the list API (unlike GET /api/tasks/<id>, it does not call the ML backend)."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._json(
                "GET",
                "/api/tasks/",
                params={"project": project_id, "page": page, "page_size": 100, "fields": "all"},
            )
            batch = body["tasks"] if isinstance(body, dict) else body
            out.extend(batch)
            total = body.get("total", len(out)) if isinstance(body, dict) else len(out)
            if not batch or len(out) >= total:
                return out
            page += 1

    def task(self, task_id: int) -> dict[str, Any]:
        """GET /api/tasks/<id>. Gotcha: when the task has no prediction, LS first calls the ML backend's /predict."""
        return dict(self._json("GET", f"/api/tasks/{task_id}", timeout=PREDICT_REQUEST_TIMEOUT))

    # ------------------------------------------------------------------ ML backend

    def connect_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str,
        is_interactive: bool = True,
        basic_auth: tuple[str, str] | None = None,
        require_connected: bool = True,
    ) -> int:
        """POST /api/ml. LS calls the backend's /health and /setup right away (HTTP 400 if unreachable) and creates
        a project webhook `<url>/webhook` (send_for_all_actions, send_payload). Returns the ML backend id."""
        body: dict[str, Any] = {"project": project_id, "url": url, "title": title, "is_interactive": is_interactive}
        if basic_auth is not None:
            body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
        backend = self._json("POST", "/api/ml", json=body, timeout=PREDICT_REQUEST_TIMEOUT)
        if require_connected and backend.get("state") != "CO":
            raise LabelStudioError(
                f"ML backend {url} was created (id {backend.get('id')}) but is in state {backend.get('state')!r}: "
                f"{backend.get('error_message')}"
            )
        return int(backend["id"])

    def ml_backend(self, ml_id: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/ml/{ml_id}"))

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/ml", params={"project": project_id}))

    def retrieve_predictions(self, project_id: int, task_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Data Manager action retrieve_tasks_predictions (synchronous: returns after the backend answered).

        Gotcha: tasks that already hold a prediction of the backend's current model_version are skipped without
        calling the backend, yet the answer still says "Retrieved N predictions".
        """
        if task_ids is None:
            selected: dict[str, Any] = {"all": True, "excluded": []}
        else:
            selected = {"all": False, "included": [int(t) for t in task_ids]}
        return dict(
            self._json(
                "POST",
                "/api/dm/actions",
                params={"id": "retrieve_tasks_predictions", "project": project_id},
                json={"selectedItems": selected},
                timeout=PREDICT_REQUEST_TIMEOUT,
            )
        )

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/predictions", params={"task": task_id}))

    def interactive_annotating(
        self, ml_id: int, task_id: int, context: Mapping[str, Any], raise_on_errors: bool = True
    ) -> dict[str, Any]:
        """What the labeling UI does for interactive pre-annotation: `{"data": <first /predict result>}`.

        `context` is e.g. {"result": [<textarea result with value.text = [prompt]>]}. LS stores no prediction.
        LS reports backend failures as HTTP 200 `{"errors": [...]}`; those raise unless `raise_on_errors` is false.
        """
        body = dict(
            self._json(
                "POST",
                f"/api/ml/{ml_id}/interactive-annotating",
                json={"task": task_id, "context": dict(context)},
                timeout=PREDICT_REQUEST_TIMEOUT,
            )
        )
        if raise_on_errors and body.get("errors"):
            raise LabelStudioError(f"interactive-annotating (ml {ml_id}, task {task_id}) failed: {body['errors']}")
        return body

    # ------------------------------------------------------------------ annotations and webhooks

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """POST /api/tasks/<id>/annotations/ -> the annotation. Emits ANNOTATION_CREATED to project webhooks."""
        return dict(
            self._json(
                "POST",
                f"/api/tasks/{task_id}/annotations/",
                json={"result": result, **fields},
                timeout=PREDICT_REQUEST_TIMEOUT,
            )
        )

    def update_annotation(self, annotation_id: int, result: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """PATCH /api/annotations/<id>/ -> the annotation. Emits ANNOTATION_UPDATED."""
        return dict(
            self._json(
                "PATCH",
                f"/api/annotations/{annotation_id}/",
                json={"result": result, **fields},
                timeout=PREDICT_REQUEST_TIMEOUT,
            )
        )

    def delete_annotation(self, annotation_id: int) -> None:
        """DELETE /api/annotations/<id>/. Emits ANNOTATIONS_DELETED (plural; payload `annotations: [{"id"}]`)."""
        self.request("DELETE", f"/api/annotations/{annotation_id}/", ok=(204,), timeout=PREDICT_REQUEST_TIMEOUT)

    def annotations(self, task_id: int) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/api/tasks/{task_id}/annotations/"))

    def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        """Project webhooks (the one LS made for a connected ML backend among them)."""
        return list(self._json("GET", "/api/webhooks/", params={"project": project_id}))

    def update_webhook(self, webhook_id: int, **fields: Any) -> dict[str, Any]:
        """PATCH /api/webhooks/<id>/, e.g. is_active=False, or send_for_all_actions=False with actions=[...]."""
        return dict(self._json("PATCH", f"/api/webhooks/{webhook_id}/", json=fields))


def dump(value: Any) -> str:
    """Indented JSON, for assertion messages."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)
