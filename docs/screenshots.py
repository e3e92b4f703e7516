"""Screenshots of the Dagster UI for the documentation, taken by a real headless Chromium.

    PYTHONPATH=. .venv/bin/python docs/screenshots.py <lab home> <output folder> [ASSET KEY ...]

starts a webserver on the lab home (``tests/webserver.py``) and saves, as 1600x1000 PNGs:

- ``asset-graph.png``: the global asset lineage (``/asset-groups``);
- for each asset key given (``lr_sweep/lr_0_003/eval``; default: the most materialized asset):
  ``asset-<key>.png``, the asset's page, its metadata shown as plots over materializations (the "Plots" toggle
  of the Overview tab's Metadata section), the whole page; ``materialization-<key>.png``, its latest
  materialization (``/assets/<key>?view=events&time=<ms>``).

The last two need a materialized asset; on a fresh lab home only the graph is taken. Chromium comes from the
system (Debian's ``chromium`` package), never from Playwright's downloader.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Page, expect, sync_playwright

from tests.webserver import Webserver, running_webserver

VIEWPORT = {"width": 1600, "height": 1000}
PAGE_TIMEOUT_MS = 120_000
# The UI's "Join the Dagster community" dialog stays away once the browser remembers it was dismissed.
DISMISS_COMMUNITY_DIALOG = "localStorage.setItem('communityNux', JSON.stringify('1'))"
# Placeholders the UI shows while its queries are in flight: grey dots for unknown statuses, and spinners.
LOADING = "[class*=Dot_loadingDot], [class*=Spinner_spinner]"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def browser_page() -> Iterator[Page]:
    """A page of a fresh headless Chromium with a large viewport."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            context.add_init_script(DISMISS_COMMUNITY_DIALOG)
            yield context.new_page()
        finally:
            browser.close()


def open_page(page: Page, url: str) -> None:
    page.goto(url, wait_until="networkidle")


def settle(page: Page) -> None:
    """Wait until the page's queries are answered and drawn: network idle, no loading placeholder left."""
    page.wait_for_load_state("networkidle")
    expect(page.locator(LOADING)).to_have_count(0, timeout=PAGE_TIMEOUT_MS)


def asset_path(key: list[str]) -> str:
    return "/assets/" + "/".join(quote(part, safe="") for part in key)


def screenshot_asset_graph(page: Page, web: Webserver, path: Path) -> Path:
    """The global lineage graph, once its asset nodes are laid out and drawn."""
    open_page(page, f"{web.url}/asset-groups")
    # Nodes (assets, or collapsed groups) are HTML inside the graph's SVG: there once the layout is done.
    page.locator("svg foreignObject").first.wait_for()
    settle(page)
    page.screenshot(path=path)
    return path


def screenshot_asset(page: Page, web: Webserver, key: list[str], path: Path) -> Path:
    """The asset's Overview tab, its metadata plotted over materializations when it has numeric metadata."""
    open_page(page, web.url + asset_path(key))
    page.get_by_text("Latest materialization").first.wait_for()
    plots = page.get_by_role("button", name="Plots")
    if plots.count():
        plots.click()
        page.locator("canvas").first.wait_for()
    settle(page)
    page.screenshot(path=path, full_page=True)
    return path


def screenshot_materialization(page: Page, web: Webserver, key: list[str], timestamp: str, path: Path) -> Path:
    """One materialization of the asset: its metadata, tags and run, as the Events tab shows it."""
    open_page(page, f"{web.url}{asset_path(key)}?view=events&time={timestamp}")
    page.get_by_text("Materialized", exact=True).first.wait_for()
    settle(page)
    page.screenshot(path=path, full_page=True)
    return path


def take_screenshots(web: Webserver, out_dir: Path, keys: list[list[str]] | None = None) -> list[Path]:
    """The asset graph, then for each key (default: the most materialized asset) its page and latest
    materialization; the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    history = {tuple(key): web.materializations(key) for key in web.asset_keys()}
    if keys is None:
        most = max(history.items(), key=lambda item: len(item[1]))
        keys = [list(most[0])] if most[1] else []
    with browser_page() as page:
        paths = [screenshot_asset_graph(page, web, out_dir / "asset-graph.png")]
        for key in keys:
            events, name = history[tuple(key)], "-".join(key)
            paths.append(screenshot_asset(page, web, key, out_dir / f"asset-{name}.png"))
            paths.append(screenshot_materialization(page, web, key, events[0]["timestamp"],
                                                    out_dir / f"materialization-{name}.png"))
    return paths


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    keys = [key.split("/") for key in argv[2:]] or None
    with running_webserver(Path(argv[0])) as web:
        for path in take_screenshots(web, Path(argv[1]), keys):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
