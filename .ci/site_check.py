"""Check the built documentation site as a reader would see it: links, images, maths, console.

Two layers:

- **Static** (pure Python, no browser; tested in ``tests/docs/test_site_check.py``): every
  ``*.html`` file of the built site is parsed, and every local link (``<a href>``), image
  (``<img src>``), stylesheet, script and audio/video source must name a file of the site; a
  link's ``#fragment`` must be an ``id`` on the target page; images, scripts, stylesheets and
  media from another host are reported, since the site must be readable with no network.
  :func:`raw_tex` finds TeX left unrendered in a page's visible text.
- **Browser**: the site is served on 127.0.0.1 and every page is opened in headless Chromium,
  driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no driver and no
  Python package needed). A page fails on a console error or uncaught exception, a failed
  request (HTTP status >= 400 or a network error), an image that did not decode, an
  ``arithmatex`` element KaTeX did not typeset, or raw TeX (``$...$``, ``\\(``, ``\\frac``...)
  in its visible text outside code and rendered maths. A screenshot of each page is saved.

    python .ci/site_check.py site --screenshots site-check     # `make docs-check`
    python .ci/site_check.py site --static-only                 # no Chromium needed

Exit status 0 when every page passes, 1 otherwise (each problem printed with its page).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import http.server
import json
import os
import posixpath
import re
import select
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Chromium as root on a machine with no network: no sandbox, no GPU, none of its own
# background connections, and a fresh profile (--user-data-dir) each run.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--mute-audio", "--remote-debugging-pipe")
SKIPPED_PAGES = ("404.html",)  # served for missing pages; its links are site-absolute


@dataclass(frozen=True)
class Problem:
    """One failure: the page (path relative to the site), what kind, and the detail."""

    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


@dataclass
class PageInfo:
    """What :func:`parse_page` finds in one HTML document."""

    links: list[str] = field(default_factory=list)  # <a href>
    images: list[str] = field(default_factory=list)  # <img src>
    resources: list[str] = field(default_factory=list)  # stylesheets, scripts, media
    ids: set[str] = field(default_factory=set)  # id= and <a name=>


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.info = PageInfo()

    def handle_starttag(self, tag, attrs):
        a = {k: v for k, v in attrs if v is not None}
        if "id" in a:
            self.info.ids.add(a["id"])
        if tag == "a":
            if "name" in a:
                self.info.ids.add(a["name"])
            if "href" in a:
                self.info.links.append(a["href"])
        elif tag == "img" and "src" in a:
            self.info.images.append(a["src"])
        elif tag == "link" and "href" in a and {"stylesheet", "icon", "preload"} & set(
                a.get("rel", "").lower().split()):
            self.info.resources.append(a["href"])
        elif tag in ("script", "audio", "video", "source", "track", "iframe") and "src" in a:
            self.info.resources.append(a["src"])


def parse_page(html: str) -> PageInfo:
    """Links, images, resources (stylesheets, scripts, media) and element ids of ``html``."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.info


def is_external(url: str) -> bool:
    """True for a URL with a scheme or host (``https://...``, ``//host/...``, ``mailto:``)."""
    parts = urlsplit(url)
    return bool(parts.scheme or parts.netloc)


def resolve(site: Path, page: str, url: str) -> tuple[Path | None, str]:
    """The file of the site that local ``url`` on ``page`` (relative path) names, and its
    fragment; ``(None, fragment)`` when it names nothing there (or leaves the site).

    A directory stands for its ``index.html`` (MkDocs' directory URLs); a URL starting with
    ``/`` is taken from the site's root.
    """
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not path:
        return site / page, parts.fragment
    base = "" if path.startswith("/") else posixpath.dirname(page)
    joined = posixpath.normpath(posixpath.join(base, path.lstrip("/")))
    if joined == ".." or joined.startswith("../"):
        return None, parts.fragment
    target = site / joined if joined != "." else site
    if target.is_dir():
        target = target / "index.html"
    return (target if target.is_file() else None), parts.fragment


def html_pages(site: Path) -> list[str]:
    """Paths (relative, with ``/``) of the site's HTML pages, theme assets and 404 left out."""
    pages = []
    for path in sorted(site.rglob("*.html")):
        relative = path.relative_to(site).as_posix()
        if relative in SKIPPED_PAGES or relative.startswith("assets/"):
            continue
        pages.append(relative)
    return pages


def check_static(site: str | Path) -> tuple[list[str], list[Problem]]:
    """Broken local links, images and resources, missing fragments and external resources
    on every page of the built ``site`` (a folder). Returns ``(pages, problems)``."""
    site = Path(site)
    if not (site / "index.html").is_file():
        raise FileNotFoundError(f"{site} has no index.html: build the site first (make docs)")
    pages = html_pages(site)
    parsed: dict[Path, PageInfo] = {}

    def info(path: Path) -> PageInfo:
        if path not in parsed:
            parsed[path] = parse_page(path.read_text(encoding="utf-8", errors="replace"))
        return parsed[path]

    problems = []
    for page in pages:
        found = info(site / page)
        for kind, urls in (("link", found.links), ("image", found.images),
                           ("resource", found.resources)):
            for url in urls:
                if url.startswith(("javascript:", "data:")):
                    continue
                if is_external(url):
                    if kind != "link":  # the site must not need the network
                        problems.append(Problem(page, f"external {kind}", url))
                    continue
                target, fragment = resolve(site, page, url)
                if target is None:
                    problems.append(Problem(page, f"broken {kind}", url))
                elif (kind == "link" and fragment and target.suffix == ".html"
                      and fragment not in info(target).ids):
                    problems.append(Problem(page, "missing anchor", url))
    return pages, problems


_MATH_DELIMITED = re.compile(r"\$\$.+?\$\$|\$[^\s$](?:[^$\n]*?[^\s$])?\$|\\\(.+?\\\)|\\\[.+?\\\]",
                             re.S)
_TEX_COMMAND = re.compile(r"\\(?:frac|sum|prod|int|log|exp|mathbb|mathcal|mathrm|operatorname|"
                          r"left|right|le|ge|leq|geq|sim|approx|alpha|beta|theta|phi|mu|sigma|"
                          r"epsilon|lambda|cdot|cdots|ldots|text|begin|end|hat|tilde|bar|"
                          r"partial|nabla|infty|mid|quad|qquad)(?![a-zA-Z])")


def raw_tex(text: str) -> list[str]:
    """Pieces of ``text`` that look like TeX a renderer should have typeset: ``$...$``,
    ``$$...$$``, ``\\(...\\)``, ``\\[...\\]`` or a TeX command such as ``\\frac``.

    ``text`` is a page's visible text with code and rendered maths already left out, so a
    lone ``$`` (a price, a shell prompt) is not reported, but a pair around a formula is.
    """
    found = [m.group(0) for m in _MATH_DELIMITED.finditer(text)]
    rest = _MATH_DELIMITED.sub(" ", text)
    found += [m.group(0) for m in _TEX_COMMAND.finditer(rest)]
    return [" ".join(piece.split())[:80] for piece in found]


# ------------------------------------------------------------------------------ the browser
class DevTools:
    """A minimal client of Chromium's DevTools protocol over ``--remote-debugging-pipe``.

    Chromium reads commands from its fd 3 and writes replies and events to its fd 4, each a
    JSON object ended by a NUL byte.
    """

    def __init__(self, chromium: str, user_data_dir: str, extra_flags=()):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # the child's ends moved above 4 first, so that placing one cannot overwrite the other
        child_ends = []
        for fd in (to_child_r, from_child_w):
            child_ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
            os.close(fd)
        to_child_r, from_child_w = child_ends

        def place_pipes():  # in the child, before exec: the pipes become fds 3 and 4
            os.dup2(to_child_r, 3)  # dup2 makes them inheritable, the originals close on exec
            os.dup2(from_child_w, 4)

        self.process = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={user_data_dir}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=place_pipes, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        # drain stderr so that Chromium never blocks on a full pipe
        self._stderr: list[bytes] = []
        threading.Thread(target=lambda: self._stderr.extend(self.process.stderr), daemon=True
                         ).start()

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], 0.2)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe: "
                                       + b"".join(self._stderr[-20:]).decode(errors="replace"))
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        """Run one command and return its result; events that arrive meanwhile are kept in
        :attr:`events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> dict | None:
        """The first event ``method`` (kept or arriving within ``timeout`` s), or None."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            try:
                self.events.append(self._read_message(deadline))
            except TimeoutError:
                return None

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_child)
        os.close(self._from_child)


# JavaScript run in each page once it has loaded: what a reader would notice.
PAGE_PROBE = r"""
(() => {
  const broken = [...document.images]
    .filter(img => !img.complete || img.naturalWidth === 0)
    .map(img => img.getAttribute("src"));
  const untypeset = [...document.querySelectorAll(".arithmatex:not([data-typeset])")]
    .map(el => el.textContent.slice(0, 80));
  const audio = [...document.querySelectorAll("audio")]
    .filter(a => a.error || a.readyState === 0 || !(a.duration > 0))
    .map(a => (a.currentSrc || a.getAttribute("src") || "?") +
              (a.error ? " (error " + a.error.code + ")" : " (no duration)"));
  const body = document.querySelector("article") || document.body;
  const copy = body.cloneNode(true);
  copy.querySelectorAll("pre, code, script, style, .katex, .katex-display, .arithmatex")
    .forEach(el => el.remove());
  return JSON.stringify({broken, untypeset, audio, text: copy.innerText,
                         height: document.documentElement.scrollHeight,
                         katex: document.querySelectorAll(".katex").length});
})()
"""


SETTLED = r"""
new Promise(resolve => {
  const done = () => [...document.images].every(img => img.complete) &&
    [...document.querySelectorAll("audio, video")].every(m => m.readyState >= 1 || m.error);
  const deadline = Date.now() + 10000;  // then the probe reports what is still missing
  const poll = () => (done() || Date.now() > deadline) ? resolve(done()) : setTimeout(poll, 100);
  poll();
})
"""


def evaluate(browser: DevTools, session: str, expression: str, timeout: float = 30.0):
    """The value of a JavaScript ``expression`` in the page (a promise is awaited)."""
    reply = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                              "awaitPromise": True},
                         session=session, timeout=timeout)
    if "exceptionDetails" in reply:
        raise RuntimeError(f"the page check failed: {reply['exceptionDetails']}")
    return reply["result"].get("value")


def _serve(site: Path) -> tuple[socketserver.TCPServer, int]:
    """Serve ``site`` on 127.0.0.1 at a free port in a background thread."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the browser's requests are checked through DevTools
        pass


def event_problems(page: str, events: list[dict], session: str) -> list[Problem]:
    """Console errors, exceptions and failed requests among the DevTools ``events``."""
    problems = []
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", "")))
                            for a in params.get("args", []))
            problems.append(Problem(page, "console error", text[:300]))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            problems.append(Problem(page, "uncaught exception", text[:300]))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            problems.append(Problem(page, "console error",
                                    f"{entry.get('text', '')} {entry.get('url', '')}"[:300]))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(Problem(page, "request failed",
                                    f"{params.get('errorText')} ({params.get('type')})"))
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            if response.get("status", 200) >= 400:
                problems.append(Problem(page, "request failed",
                                        f"HTTP {response['status']} {response.get('url')}"))
    return problems


def check_in_browser(site: str | Path, pages: list[str], screenshots: str | Path | None,
                     chromium: str = "chromium", settle_seconds: float = 0.5,
                     width: int = 1280) -> tuple[list[Problem], dict[str, int]]:
    """Open each of ``pages`` (paths relative to ``site``) in headless Chromium; see the
    module docstring for what fails. Screenshots go to ``screenshots/<page>.png``.

    Returns:
        the problems, and the number of formulas KaTeX typeset on each page.
    """
    program = shutil.which(chromium)
    if program is None:
        raise FileNotFoundError(f"{chromium} not found (Debian: apt-get install chromium)")
    site = Path(site)
    server, port = _serve(site)
    problems: list[Problem] = []
    formulas: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="site-check-") as profile:
        browser = DevTools(program, profile)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget",
                                   {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                browser.send(f"{domain}.enable", session=session)
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": 900, "deviceScaleFactor": 1,
                          "mobile": False}, session=session)
            for page in pages:
                browser.events.clear()
                url = f"http://127.0.0.1:{port}/{page}"
                result = browser.send("Page.navigate", {"url": url}, session=session)
                if result.get("errorText"):
                    problems.append(Problem(page, "navigation failed", result["errorText"]))
                    continue
                if browser.wait_for("Page.loadEventFired", timeout=30) is None:
                    problems.append(Problem(page, "load timeout", url))
                # images decoded and audio metadata read (or failed), then a little settling
                evaluate(browser, session, SETTLED)
                time.sleep(settle_seconds)
                probe = json.loads(evaluate(browser, session, PAGE_PROBE))
                formulas[page] = probe["katex"]
                problems += event_problems(page, browser.events, session)
                problems += [Problem(page, "broken image", src) for src in probe["broken"]]
                problems += [Problem(page, "maths not typeset", tex)
                             for tex in probe["untypeset"]]
                problems += [Problem(page, "audio not playable", a) for a in probe["audio"]]
                problems += [Problem(page, "raw TeX in the text", tex)
                             for tex in raw_tex(probe["text"])]
                if screenshots is not None:
                    shot = Path(screenshots) / (page[:-len(".html")] + ".png")
                    shot.parent.mkdir(parents=True, exist_ok=True)
                    height = min(int(probe["height"]), 16000)
                    data = browser.send("Page.captureScreenshot", {
                        "format": "png", "captureBeyondViewport": True,
                        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
                        session=session, timeout=60)["data"]
                    shot.write_bytes(base64.b64decode(data))
        finally:
            browser.close()
            server.shutdown()
            server.server_close()
    return problems, formulas


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", help="the built site (mkdocs build --site-dir SITE)")
    parser.add_argument("--screenshots", default="site-check",
                        help="folder for one PNG per page")
    parser.add_argument("--chromium", default="chromium", help="the browser's executable")
    parser.add_argument("--static-only", action="store_true",
                        help="only the link and image checks on the HTML files")
    args = parser.parse_args(argv)

    pages, problems = check_static(args.site)
    print(f"static: {len(pages)} pages, {len(problems)} problems")
    if not args.static_only:
        if args.screenshots:
            shutil.rmtree(args.screenshots, ignore_errors=True)
        browser_problems, formulas = check_in_browser(args.site, pages, args.screenshots,
                                                      args.chromium)
        print(f"browser: {len(pages)} pages opened in headless Chromium, "
              f"{sum(formulas.values())} formulas typeset on {sum(map(bool, formulas.values()))} "
              f"of them, {len(browser_problems)} problems; screenshots in {args.screenshots}/")
        problems += browser_problems
    failed = sorted({p.page for p in problems})
    for problem in problems:
        print(f"  {problem}")
    print(f"{len(pages)} pages checked, {len(failed)} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
