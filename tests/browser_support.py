"""What the browser test needs: Chromium and its driver, a copy of the course, a JupyterLab server, and
the JupyterLab page driven through its menus, as a person would.

Nothing here checks the course; ``tests/test_browser.py`` does. Every wait has a deadline and raises
``BrowserTestError`` (a failure, never a skip) with what it was waiting for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMEDRIVER_NAMES = ("chromedriver",)
# Headless Chromium, offline: nothing in the background reaches the network (the machines have none).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--window-size=1400,1100"]

# JupyterLab's settings for the test's fresh settings folder: every cell in the page (no virtual
# scrolling, so each output can be inspected) and no news or update checks (offline).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


class BrowserTestError(AssertionError):
    """A browser-test step that did not happen in time, or went wrong: a test failure."""


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why they are missing. $CHROMIUM / $CHROMEDRIVER win (and must
    name executables: a wrong one is an error, not a reason to skip)."""
    for var in ("CHROMIUM", "CHROMEDRIVER"):
        if os.environ.get(var) and not shutil.which(os.environ[var]):
            raise BrowserTestError(f"{var}={os.environ[var]} is not an executable (unset it to use PATH)")
    chromium = next(filter(None, map(shutil.which, [os.environ.get("CHROMIUM", ""), *CHROMIUM_NAMES])), None)
    driver = next(filter(None, map(shutil.which, [os.environ.get("CHROMEDRIVER", ""), *CHROMEDRIVER_NAMES])), None)
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
    if missing:
        return (f"{' and '.join(missing)} not found on PATH (Debian: apt-get install chromium chromium-driver; "
                ".ci/run installs them)")
    return chromium, driver


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5,
             on_timeout: Callable[[], str] | None = None) -> Any:
    """``check()``'s first truthy value; BrowserTestError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise BrowserTestError(f"timed out after {timeout:.0f} s waiting for {what}" + (f": {extra}" if extra else ""))
        time.sleep(interval)


# ----------------------------------------------------------------------------- the course copy


def project_files(project_root: Path) -> list[str]:
    """The project's files as git sees them: tracked plus untracked-but-not-ignored (the working tree)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=project_root, capture_output=True, check=True).stdout
    return sorted({name for name in out.decode().split("\0") if name and (project_root / name).is_file()})


def copy_project(project_root: Path, dest: Path) -> Path:
    """A copy of the project's working tree (no .venv, runs/ or data/ outputs) at ``dest``."""
    for name in project_files(project_root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project_root / name, target)
    return dest


def set_parameters(notebook: Path, values: dict[str, Any]) -> None:
    """Give a notebook copy new parameter values, as papermill does: a cell tagged
    ``injected-parameters`` right after the ``parameters`` cell. Only names the parameters cell
    defines are set; a missing name is an error (the notebook's parameters changed)."""
    import ast

    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = nbformat.read(notebook, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise BrowserTestError(f"{notebook.name}: expected one cell tagged 'parameters', found {len(tagged)}")
    defined = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name)}
    unknown = sorted(set(values) - defined)
    if unknown:
        raise BrowserTestError(f"{notebook.name}: its parameters cell no longer defines {', '.join(unknown)} "
                               "(update the browser test's tiny schedule)")
    nb = parameterize_notebook(load_notebook_node(str(notebook)), values)
    nbformat.write(nb, notebook)


# ----------------------------------------------------------------------------- JupyterLab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``python -m jupyter lab`` from this environment, on 127.0.0.1 with a token, serving ``root``.

    Its kernels import ``helpers`` from ``root`` (PYTHONPATH) and see no HELPERS_HEADLESS. Config,
    settings, workspaces and runtime files live in ``state``: nothing of the user's is read or written.
    """

    def __init__(self, root: Path, state: Path, log_path: Path):
        self.root, self.state, self.log_path = root, state, log_path
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "JupyterLab":
        settings = self.state / "lab-settings"
        for name, value in LAB_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in ("HELPERS_HEADLESS", "JUPYTER_PATH")}
        env.update(PYTHONPATH=str(self.root), JUPYTER_CONFIG_DIR=str(self.state / "config"),
                   JUPYTER_RUNTIME_DIR=str(self.state / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.state / "workspaces"))
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--LabApp.news_url=", "--ServerApp.open_browser=False"]
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(f"JupyterLab to answer on {self.url} (log: {self.log_path})", self._answers, timeout,
                 on_timeout=lambda: self.log_tail())
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise BrowserTestError(f"JupyterLab exited with code {self.proc.returncode}: {self.log_tail()}")
        try:
            self.api("GET", "/api/status")
            return True
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.url + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def session_of(self, notebook_path: str) -> dict | None:
        return next((s for s in self.api("GET", "/api/sessions") if s.get("path") == notebook_path), None)

    def shutdown_kernels(self) -> None:
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def stop(self) -> None:
        """Shut the kernels down through the API, then end the server by its PID (kill after 20 s)."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                try:
                    self.shutdown_kernels()
                except (urllib.error.URLError, OSError):
                    pass
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
        finally:
            if self._log:
                self._log.close()
            self.proc = None


# ----------------------------------------------------------------------------- Chromium


def start_chromium(chromium: str, chromedriver: str, profile_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    return driver


# ----------------------------------------------------------------------------- the page

# One JSON snapshot of the open notebook's cells, as the page shows them.
_CELLS_JS = r"""
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const out = [];
panel.querySelectorAll('.jp-Notebook .jp-Cell').forEach((cell, index) => {
  const prompt = cell.querySelector('.jp-InputPrompt');
  const outputs = Array.from(cell.querySelectorAll('.jp-OutputArea-output'));
  const imgs = Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).map(img => {
    const r = img.getBoundingClientRect();
    return {widget: !!img.closest('.jupyter-widgets'), complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
            shown: [r.width, r.height], src: img.src.slice(0, 60)};
  });
  out.push({
    index, code: cell.classList.contains('jp-CodeCell'),
    prompt: prompt ? prompt.textContent.trim() : '',
    mimes: outputs.map(o => o.getAttribute('data-mime-type') || ''),
    text: outputs.map(o => o.innerText),
    imgs,
    widgets: cell.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length,
    progress: cell.querySelectorAll('.jp-OutputArea-output .widget-hprogress').length,
    bars: Array.from(cell.querySelectorAll('.jp-OutputArea-output .widget-hprogress')).map(
      bar => (bar.closest('.widget-hbox') || bar).textContent.replace(/\s+/g, ' ').trim()),
  });
});
return out;
"""


class LabPage:
    """The JupyterLab page in Chromium: open a notebook, run all cells through the Run menu, save."""

    def __init__(self, driver, lab: JupyterLab, artifacts: Path):
        self.driver, self.lab, self.artifacts = driver, lab, artifacts

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def cells(self) -> list[dict]:
        return self.driver.execute_script(_CELLS_JS) or []

    def open(self, notebook_path: str, ncells: int, timeout: float = 180) -> None:
        """Open ``notebook_path`` (relative to the server root) and wait for its cells and an idle kernel."""
        self.driver.get(f"{self.lab.url}/lab/tree/{notebook_path}?reset&token={self.lab.token}")
        wait_for(f"{notebook_path}: its {ncells} cells in the page", lambda: len(self.cells()) == ncells, timeout,
                 on_timeout=lambda: f"{len(self.cells())} shown (screenshot {self.screenshot('timeout_open')})")

        def kernel_idle() -> bool:
            session = self.lab.session_of(notebook_path)
            return bool(session and session["kernel"]["execution_state"] == "idle")

        wait_for(f"{notebook_path}: an idle kernel", kernel_idle, timeout)

    def menu(self, menu: str, label: str) -> None:
        """Click a menu bar entry, then its item labelled ``label``, as a person would."""
        from selenium.webdriver.common.by import By

        def menu_item():
            items = [e for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                     if e.text.strip() == menu]
            return items[0] if items else None

        def item():
            return [e for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                    if e.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel")
                    and e.find_element(By.CSS_SELECTOR, ".lm-Menu-itemLabel").text.strip() == label]

        wait_for(f"the {menu!r} menu", menu_item, 30).click()
        wait_for(f"the {menu} > {label} menu item", item, 30,
                 on_timeout=lambda: f"screenshot {self.screenshot('timeout_menu')}")[0].click()

    def run_all(self, notebook_path: str, timeout: float, while_running: Callable[[list[dict]], None] | None = None) -> float:
        """Run > Run All Cells, and wait until no cell is queued or running and the kernel is idle.

        ``while_running`` sees each snapshot of the cells while it runs. Returns the seconds it took."""
        started = time.monotonic()
        self.menu("Run", "Run All Cells")
        code = lambda snapshot: [c for c in snapshot if c["code"]]  # noqa: E731
        wait_for(f"{notebook_path}: Run All Cells to start (a cell marked [*] or numbered)",
                 lambda: any(c["prompt"] not in ("", "[ ]:") for c in code(self.cells())), 60)
        stable = []

        def finished() -> bool:
            snapshot = self.cells()
            if while_running:
                while_running(snapshot)
            session = self.lab.session_of(notebook_path)
            idle = bool(session and session["kernel"]["execution_state"] == "idle")
            done = idle and not any(c["prompt"] == "[*]:" for c in code(snapshot))
            stable.append(done)
            return len(stable) >= 3 and all(stable[-3:])  # idle with nothing running, three polls in a row

        def state() -> str:
            prompts = [c["prompt"] for c in code(self.cells())]
            return f"prompts {prompts} (screenshot {self.screenshot('timeout_run_all')})"

        wait_for(f"{notebook_path}: all cells to finish", finished, timeout, interval=2.0, on_timeout=state)
        return time.monotonic() - started

    def save(self, notebook_file: Path, timeout: float = 60) -> dict:
        """File > Save Notebook; the saved notebook, read back from disk once it changed."""
        before = notebook_file.stat().st_mtime_ns
        self.menu("File", "Save Notebook")

        def saved():
            if notebook_file.stat().st_mtime_ns == before:
                return None
            try:
                return json.loads(notebook_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, OSError):
                return None  # mid-write

        return wait_for(f"{notebook_file.name} to be saved", saved, timeout)

    def console_log(self) -> list[dict]:
        return self.driver.get_log("browser")

    def image_digest(self, element) -> tuple[str, int, int]:
        """(sha1 of the bytes behind an img's src, natural width, natural height)."""
        data = self.driver.execute_async_script(
            "const [img, done] = arguments;"
            "fetch(img.src).then(r => r.arrayBuffer()).then(b => {"
            "  let s = ''; const u = new Uint8Array(b); for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]);"
            "  done(btoa(s)); }).catch(e => done('ERROR ' + e));", element)
        if data.startswith("ERROR"):
            raise BrowserTestError(f"could not read the widget image's bytes: {data}")
        natural = self.driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", element)
        return hashlib.sha1(base64.b64decode(data)).hexdigest(), natural[0], natural[1]
