"""The web page end to end: a real uvicorn server over a real KB, driven by headless Chromium.

One browser and one server for the module. Selenium Manager never runs: the Debian
``chromedriver`` and ``chromium`` are named explicitly and SE_OFFLINE is set.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx
import pytest
import uvicorn

from osprag import KnowledgeBase
from osprag.embedding import Embedder
from osprag.server import create_app

from .conftest import base_settings
from .server_helpers import CANARY, serve_settings, token_value, write_corpus, write_tokens

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    not (CHROMEDRIVER and CHROMIUM),
    reason="headless browser test needs Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver; .ci/run installs them)",
)

HANDBOOK = """---
access_level: 1
doc_type: Handbuch
tags: QM
---
# Handbuch Wareneingang

## Abschnitt Eins Annahme

{body} Wareneingang Annahme EINS-MARKE.

## Abschnitt Zwei Prüfung

{body} Wareneingang Prüfung ZWEI-MARKE.

## Abschnitt Drei Lagerung

{body} Wareneingang Lagerung DREI-MARKE.
"""
FILLER = " ".join(
    f"Satz {i}: Die Ware wird am Wareneingang gezählt, geprüft und dokumentiert." for i in range(12)
)
EXTENDED = """---
access_level: 1
doc_type: Norm
---
# VDA Crimpverbindungen

Die Crimphöhe wird nach VDA gemessen. Hinweis <img src=x onerror=alert(1)> <b>bleibt Text</b>.
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    url: str
    kb: KnowledgeBase


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("webui")
    settings = serve_settings(base_settings(tmp, storage="embedded", chunk_tokens=96), tmp)
    write_tokens(settings.server.tokens_file)  # type: ignore[arg-type]
    kb = KnowledgeBase.open(settings, embedder=embedder)
    corpus = write_corpus(tmp / "kern")
    (corpus / "handbuch.md").write_text(HANDBOOK.format(body=FILLER), encoding="utf-8")
    kb.ingest([corpus], "kern")
    ext = tmp / "erweitert"
    ext.mkdir()
    (ext / "vda-crimpen.md").write_text(EXTENDED, encoding="utf-8")
    kb.ingest([ext], "erweitert")
    port = _free_port()
    app = create_app(settings, kb=kb)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Site(f"http://127.0.0.1:{port}", kb)
    finally:
        server.should_exit = True
        thread.join(15)
        kb.close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
        "--lang=de-DE",
    ):
        options.add_argument(arg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # Selenium Manager must not download anything
        browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_script_timeout(10)
    try:
        yield browser
    finally:
        browser.quit()


def _wait(driver: Any, what: Callable[[Any], Any], timeout: float = 10) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(what)


def _el(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def _els(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def _open(driver: Any, site: Site, token: str | None) -> None:
    """A fresh page: German, signed in with ``token`` (a tokens-file name) or not at all."""
    driver.get(site.url + "/")
    driver.execute_script(
        "sessionStorage.clear(); localStorage.clear();"
        "if (arguments[0]) sessionStorage.setItem('osp.token', arguments[0]);",
        token_value(token) if token else None,
    )
    driver.get(site.url + "/")
    if token:
        _wait(driver, lambda d: token in _el(d, "#whoami").text)


def _search(driver: Any, text: str, n: str = "10") -> list[Any]:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    if not _el(driver, "#filters").get_attribute("open"):
        _el(driver, "#filters summary").click()
    Select(_el(driver, "#f-n")).select_by_visible_text(n)
    driver.execute_script("document.getElementById('status').textContent = ''")
    box = _el(driver, "#q")
    box.clear()
    box.send_keys(text, Keys.ENTER)  # keyboard submit
    _wait(driver, lambda d: re.search(r"Treffer|hits", _el(d, "#status").text))
    return _els(driver, "#results li.hit")


def test_page_headers_and_no_inline_code(site: Site) -> None:
    for path in ("/", "/static/app.js", "/static/app.css", "/static/i18n.js"):
        r = httpx.get(site.url + path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
    static = resources.files("osprag.server") / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\son[a-z]+=|\sstyle=", html), "inline handler or style"
    js = (static / "app.js").read_text(encoding="utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", js)


def test_401_shows_the_token_field_then_signs_in_and_out(driver: Any, site: Site) -> None:
    _open(driver, site, None)
    _wait(driver, lambda d: _el(d, "#token").is_displayed())
    assert driver.switch_to.active_element == _el(driver, "#token")
    _el(driver, "#token").send_keys("osp_wrong_token", "\n")
    _wait(driver, lambda d: "nicht angenommen" in _el(d, "#auth-message").text)
    _el(driver, "#token").send_keys(token_value("reader2"), "\n")
    _wait(driver, lambda d: "reader2" in _el(d, "#whoami").text)
    assert "L2" in _el(driver, "#whoami").text and not _el(driver, "#auth").is_displayed()
    assert [b.text for b in _els(driver, "#layer-list .badge")] == ["kern", "erweitert"]
    _el(driver, "#signout").click()
    _wait(driver, lambda d: _el(d, "#token").is_displayed())
    assert _el(driver, "#whoami").text == ""


def test_search_badges_highlights_and_filter(driver: Any, site: Site) -> None:
    _open(driver, site, "reader2")
    hits = _search(driver, "Crimphöhe messen")
    assert len(hits) >= 3
    badges = {b.text: b.get_attribute("class") for b in _els(driver, "#results .badge")}
    assert set(badges) == {"kern", "erweitert"} and badges["kern"] != badges["erweitert"]
    marks = {m.text.lower() for m in _els(driver, "#results mark")}
    assert "crimphöhe" in marks
    first = hits[0].text
    assert ".md" in first and re.search(r"Relevanz \d\.\d\d", first)
    assert re.search(r"\bL[12]\b", first), "access level shown"
    assert _els(driver, "#results .section"), "heading path shown"
    # result text is text, never markup
    vda = next(h for h in hits if "vda-crimpen.md" in h.text)
    assert "<b>bleibt Text</b>" in vda.text and "<img" in vda.text
    assert not _els(driver, "#results img, #results b")

    _el(driver, "#layer-list input[value=erweitert]").click()  # layer choice narrows
    core_only = _search(driver, "Crimphöhe messen")
    assert core_only and {h.get_attribute("data-layer") for h in core_only} == {"kern"}
    _el(driver, "#layer-list input[value=erweitert]").click()

    _el(driver, "#f-doc-type").send_keys("Richtlinie")
    narrowed = _search(driver, "Crimphöhe messen")
    assert 0 < len(narrowed) < len(hits)
    assert all("crimpen-l1.md" in h.text for h in narrowed)
    _el(driver, "#f-doc-type").clear()


def test_open_document_shows_chunks_in_order_and_errors_in_one_line(
    driver: Any, site: Site
) -> None:
    _open(driver, site, "reader2")
    hits = _search(driver, "Wareneingang Lagerung")
    hit = next(h for h in hits if "handbuch.md" in h.text)
    hit.find_element("css selector", "a.open-doc").click()
    _wait(driver, lambda d: _els(d, "#doc-chunks li.chunk"))
    assert _el(driver, "#doc-title").text == "Handbuch Wareneingang"
    chunks = _els(driver, "#doc-chunks li.chunk")
    order = [int(c.get_attribute("data-chunk-index")) for c in chunks]
    assert len(order) >= 3 and order == sorted(order) == list(range(len(order)))
    text = _el(driver, "#doc-chunks").text
    assert text.index("EINS-MARKE") < text.index("ZWEI-MARKE") < text.index("DREI-MARKE")
    assert _el(driver, "#doc-file").get_attribute("href").endswith("/file")
    # the original comes through fetch with the token (a plain link would get a 401)
    driver.execute_script(
        "window.__blobs = []; const make = URL.createObjectURL;"
        "URL.createObjectURL = (b) => { window.__blobs.push(b.size); return make(b); };"
    )
    _el(driver, "#doc-file").click()
    sizes = _wait(driver, lambda d: d.execute_script("return window.__blobs"))
    assert sizes == [len(HANDBOOK.format(body=FILLER).encode())]
    assert not _el(driver, "#error").is_displayed()
    _el(driver, "#doc-back").click()
    _wait(driver, lambda d: _el(d, "#results").is_displayed())

    driver.get(site.url + "/#doc/no-such-document")
    _wait(driver, lambda d: _el(d, "#error").is_displayed())
    line = _el(driver, "#error").text
    assert line.startswith("Fehler (not_found): ") and "\n" not in line


def test_clearance_2_never_sees_the_level_4_canary_while_4_does(driver: Any, site: Site) -> None:
    seen = {}
    for name in ("reader2", "reader4"):
        _open(driver, site, name)
        hits = _search(driver, "Reklamation Crimphöhe Kunde geheim Kosten", n="50")
        body = _el(driver, "body").text
        assert hits and CANARY[1] in body  # the search did return content
        seen[name] = (CANARY[3] in body, CANARY[4] in body)
    assert seen == {"reader2": (False, False), "reader4": (True, True)}


def test_english_switch_is_remembered(driver: Any, site: Site) -> None:
    _open(driver, site, "reader2")
    assert _el(driver, "#search-submit").text == "Suchen"
    assert _el(driver, "html").get_attribute("lang") == "de"
    _el(driver, "#lang-switch").click()
    assert _el(driver, "#search-submit").text == "Search"
    assert _el(driver, "html").get_attribute("lang") == "en"
    assert "Signed in as reader2" in _el(driver, "#whoami").text
    driver.refresh()
    _wait(driver, lambda d: "Signed in" in _el(d, "#whoami").text)
    assert _el(driver, "#search-submit").text == "Search"
    assert _el(driver, "label[for=f-doc-type]").get_attribute("textContent") == "Document type"
