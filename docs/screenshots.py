"""Screenshots of the Dagster UI for the documentation, taken by a real headless Chromium.

    PYTHONPATH=. .venv/bin/python docs/screenshots.py <lab home> <output folder> [KEY[#LABEL] ...]

starts a webserver on the lab home (``tests/webserver.py``) and saves PNGs (the graph 2000x2600, pages 1600 wide):

- ``asset-graph.png``: the global asset lineage (``/asset-groups``);
- for each asset key given (``lr_sweep/lr_0_003/eval``; default: the most materialized asset):
  ``asset-<key>.png``, the asset's page, its metadata shown as plots over materializations (the "Plots" toggle
  of the Overview tab's Metadata section), the whole page; ``materialization-<key>.png``, its latest
  materialization (``/assets/<key>?view=events&time=<ms>``); with ``#label`` (``lr_sweep/report#plots``),
  ``<key>-<label>.png``, that markdown metadata entry of the latest materialization, opened;
- ``checks=<key>`` (``checks=tiny/mixed``): ``checks-<key>.png``, the asset's Checks tab with its latest evaluation;
- ``automation``: ``automation.png``, the Automation tab (the schedule and the sensor, each switchable).

The materialization pictures need a materialized asset; on a fresh lab home only the graph is taken. Chromium
comes from the system (Debian's ``chromium`` package), never from Playwright's downloader.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Page, expect, sync_playwright

from orchestration.automation import SCHEDULE_NAME
from tests.webserver import Webserver, running_webserver

VIEWPORT = {"width": 1600, "height": 1000}
GRAPH_VIEWPORT = {"width": 2000, "height": 2600}
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


def expand_all_groups(page: Page) -> None:
    """The graph draws each group collapsed; its options menu (an icon button on the graph) can expand them all."""
    expand = page.get_by_text("Expand all groups")
    for button in page.locator("button").all():
        box = button.bounding_box()
        if not box or box["x"] < VIEWPORT["width"] / 2 or box["y"] < VIEWPORT["height"] / 2 or button.inner_text():
            continue  # the graph's own icon buttons sit in its lower right corner
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        menu_item = expand.locator("visible=true")
        if menu_item.count():
            menu_item.first.click()
            return
        page.keyboard.press("Escape")


def screenshot_asset_graph(page: Page, web: Webserver, path: Path) -> Path:
    """The global lineage graph, once its asset nodes are laid out and drawn."""
    open_page(page, f"{web.url}/asset-groups")
    # Nodes (assets, or collapsed groups) are HTML inside the graph's SVG: there once the layout is done.
    page.locator("svg foreignObject").first.wait_for()
    settle(page)
    expand_all_groups(page)
    # The UI remembers expanded groups: drawn afresh on a page tall enough for the graph's smallest zoom, every
    # asset of every experiment is in the picture.
    page.set_viewport_size(GRAPH_VIEWPORT)
    page.reload(wait_until="networkidle")
    page.locator("svg foreignObject").first.wait_for()
    expect(page.get_by_text("fetching statuses")).to_have_count(0, timeout=PAGE_TIMEOUT_MS)
    settle(page)
    page.screenshot(path=path)
    page.set_viewport_size(VIEWPORT)
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
    page.get_by_text("Materialized in run").first.wait_for()
    settle(page)
    page.screenshot(path=path, full_page=True)
    return path


def screenshot_markdown(page: Page, web: Webserver, key: list[str], timestamp: str, label: str, path: Path) -> Path:
    """A markdown metadata entry of the asset's latest materialization (tables, inline plots), opened in its dialog."""
    open_page(page, f"{web.url}{asset_path(key)}?view=events&time={timestamp}")
    page.locator("tr", has_text=label).get_by_text("[Show Markdown]").first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    settle(page)
    dialog.screenshot(path=path)
    return path


def screenshot_checks(page: Page, web: Webserver, key: list[str], path: Path) -> Path:
    """The asset's Checks tab: each check, its status, and the latest evaluation's metadata."""
    open_page(page, f"{web.url}{asset_path(key)}?view=checks")
    page.get_by_text("Latest execution").first.wait_for()
    settle(page)
    page.screenshot(path=path, full_page=True)
    return path


def screenshot_automation(page: Page, web: Webserver, path: Path) -> Path:
    """The Automation tab: schedules and sensors with their on/off toggles."""
    open_page(page, f"{web.url}/automation")
    page.get_by_text(SCHEDULE_NAME).first.wait_for()
    settle(page)
    page.screenshot(path=path, full_page=True)
    return path


def take_screenshots(web: Webserver, out_dir: Path, keys: list[str] | None = None) -> list[Path]:
    """The asset graph, then for each key (``a/b/c``; default: the most materialized asset) its page and latest
    materialization, or with ``#label`` (``a/b/report#plots``) that markdown entry of it; the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    history = {"/".join(key): web.materializations(key) for key in web.asset_keys()}
    if keys is None:
        most = max(history.items(), key=lambda item: len(item[1]))
        keys = [most[0]] if most[1] else []
    with browser_page() as page:
        paths = [screenshot_asset_graph(page, web, out_dir / "asset-graph.png")]
        for spec in keys:
            if spec == "automation":
                paths.append(screenshot_automation(page, web, out_dir / "automation.png"))
                continue
            if spec.startswith("checks="):
                key = spec.removeprefix("checks=")
                name = key.replace("/", "-")
                paths.append(screenshot_checks(page, web, key.split("/"), out_dir / f"checks-{name}.png"))
                continue
            key, _, label = spec.partition("#")
            timestamp, name = history[key][0]["timestamp"], key.replace("/", "-")
            if label:
                paths.append(screenshot_markdown(page, web, key.split("/"), timestamp, label,
                                                 out_dir / f"{name}-{label}.png"))
                continue
            paths.append(screenshot_asset(page, web, key.split("/"), out_dir / f"asset-{name}.png"))
            paths.append(screenshot_materialization(page, web, key.split("/"), timestamp,
                                                    out_dir / f"materialization-{name}.png"))
    return paths


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    keys = argv[2:] or None
    with running_webserver(Path(argv[0])) as web:
        for path in take_screenshots(web, Path(argv[1]), keys):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
