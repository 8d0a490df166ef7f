""".ci/site_check.py: the link, image and raw-TeX checks on small hand-written sites.

No MkDocs build and no browser: each test writes the HTML files of a tiny site and checks
that the static checker reports exactly the defects planted in it.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("site_check", ROOT / ".ci" / "site_check.py")
site_check = importlib.util.module_from_spec(_spec)
sys.modules["site_check"] = site_check  # dataclasses look their module up by name
_spec.loader.exec_module(site_check)


def write_site(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def page(body: str, head: str = "") -> str:
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def kinds(problems) -> list[tuple[str, str, str]]:
    return sorted((p.page, p.kind, p.detail) for p in problems)


def test_a_sound_site_has_no_problems(tmp_path):
    site = write_site(tmp_path, {
        "index.html": page('<a href="guide/">guide</a> <a href="guide/#setup">setup</a>'
                           '<a href="https://example.org/paper">paper</a> <a href="#top">top</a>'
                           '<img src="figures/a.png"><h1 id="top">Top</h1>',
                           head='<link rel="stylesheet" href="assets/site.css">'
                                '<script src="js/app.js"></script>'),
        "guide/index.html": page('<h2 id="setup">Setup</h2><a href="../">home</a>'
                                 '<img src="../figures/a.png">'
                                 '<audio controls src="../figures/a.wav"></audio>'),
        "figures/a.png": "png", "figures/a.wav": "wav", "assets/site.css": "",
        "js/app.js": "",
        "404.html": page('<a href="/nowhere/">absolute links on the 404 page are skipped</a>'),
    })
    pages, problems = site_check.check_static(site)
    assert pages == ["guide/index.html", "index.html"]
    assert problems == []


def test_each_planted_defect_is_reported_once(tmp_path):
    site = write_site(tmp_path, {
        "index.html": page('<a href="missing/">gone</a>'
                           '<a href="guide/#no-such-heading">bad anchor</a>'
                           '<a href="guide/#setup">good anchor</a>'
                           '<img src="figures/missing.png">'
                           '<img src="https://cdn.example.org/logo.png">',
                           head='<script src="https://cdn.example.org/katex.min.js"></script>'
                                '<link rel="stylesheet" href="assets/missing.css">'),
        "guide/index.html": page('<h2 id="setup">Setup</h2>'
                                 '<audio controls><source src="../sound.wav"></audio>'
                                 '<a href="../../outside.html">leaves the site</a>'),
    })
    _, problems = site_check.check_static(site)
    assert kinds(problems) == sorted([
        ("index.html", "broken link", "missing/"),
        ("index.html", "missing anchor", "guide/#no-such-heading"),
        ("index.html", "broken image", "figures/missing.png"),
        ("index.html", "external image", "https://cdn.example.org/logo.png"),
        ("index.html", "external resource", "https://cdn.example.org/katex.min.js"),
        ("index.html", "broken resource", "assets/missing.css"),
        ("guide/index.html", "broken resource", "../sound.wav"),
        ("guide/index.html", "broken link", "../../outside.html"),
    ])


def test_resolve_follows_directory_urls_and_the_site_root(tmp_path):
    site = write_site(tmp_path, {"index.html": "", "a/b/index.html": "", "img/x.png": ""})
    assert site_check.resolve(site, "a/b/index.html", "../../img/x.png")[0] == site / "img/x.png"
    assert site_check.resolve(site, "a/b/index.html", "/img/x.png")[0] == site / "img/x.png"
    assert site_check.resolve(site, "index.html", "a/b/#part") == (site / "a/b/index.html",
                                                                   "part")
    assert site_check.resolve(site, "index.html", "#part") == (site / "index.html", "part")
    assert site_check.resolve(site, "index.html", "a/c/")[0] is None
    assert site_check.resolve(site, "a/b/index.html", "img%20x.png")[0] is None


def test_a_site_that_was_not_built_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make docs"):
        site_check.check_static(tmp_path)


def test_parse_page_collects_links_images_resources_and_ids():
    info = site_check.parse_page(page(
        '<a href="x/" id="first">x</a><a name="old-anchor"></a><img src="p.png" alt="">'
        '<video><source src="v.mp4"></video><span id="s"></span>',
        head='<link rel="icon" href="favicon.png"><link rel="canonical" href="https://x.org/">'
             '<script>inline()</script><script src="app.js"></script>'))
    assert info.links == ["x/"]
    assert info.images == ["p.png"]
    assert info.resources == ["favicon.png", "app.js", "v.mp4"]  # canonical is no resource
    assert info.ids == {"first", "old-anchor", "s"}


@pytest.mark.parametrize("text, expected", [
    ("the bound $E_q[\\log w] \\le \\log E[w]$ holds", ["$E_q[\\log w] \\le \\log E[w]$"]),
    ("display $$\\sum_k w_k$$ here", ["$$\\sum_k w_k$$"]),
    ("inline \\(x^2\\) and \\[y\\]", ["\\(x^2\\)", "\\[y\\]"]),
    ("a stray \\frac{a}{b} command", ["\\frac"]),
    ("it costs $5 and $ is a prompt", []),
    ("plain prose with log p(x) and E[w]", []),
    ("a path C:\\foo\\leaves and \\lefty are no commands", []),
])
def test_raw_tex_finds_unrendered_maths_only(text, expected):
    assert site_check.raw_tex(text) == expected


def test_console_errors_and_failed_requests_are_problems():
    session = "S"
    events = [
        {"sessionId": session, "method": "Runtime.consoleAPICalled",
         "params": {"type": "error", "args": [{"value": "KaTeX could not typeset"}]}},
        {"sessionId": session, "method": "Runtime.consoleAPICalled",
         "params": {"type": "log", "args": [{"value": "fine"}]}},
        {"sessionId": session, "method": "Runtime.exceptionThrown",
         "params": {"exceptionDetails": {"exception": {"description": "TypeError: x"}}}},
        {"sessionId": session, "method": "Network.responseReceived",
         "params": {"response": {"status": 404, "url": "http://127.0.0.1/x.png"}}},
        {"sessionId": session, "method": "Network.responseReceived",
         "params": {"response": {"status": 200, "url": "http://127.0.0.1/y.png"}}},
        {"sessionId": session, "method": "Network.loadingFailed",
         "params": {"errorText": "net::ERR_NAME_NOT_RESOLVED", "type": "Font"}},
        {"sessionId": session, "method": "Network.loadingFailed",
         "params": {"errorText": "net::ERR_ABORTED", "canceled": True}},
        {"sessionId": "other", "method": "Runtime.exceptionThrown",
         "params": {"exceptionDetails": {"text": "another tab"}}},
    ]
    problems = site_check.event_problems("p.html", events, session)
    assert kinds(problems) == sorted([
        ("p.html", "console error", "KaTeX could not typeset"),
        ("p.html", "uncaught exception", "TypeError: x"),
        ("p.html", "request failed", "HTTP 404 http://127.0.0.1/x.png"),
        ("p.html", "request failed", "net::ERR_NAME_NOT_RESOLVED (Font)"),
    ])
