"""The Dagster webserver as a person and a test see it: the assets and edges it serves are exactly those of
``orchestration.definitions``, ``lab`` can ask it to reload, and a real browser draws the asset graph.

One webserver for the module (starting it imports the definitions: tens of seconds on a small machine).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from docs.screenshots import GRAPH_VIEWPORT, browser_page, chromium_path, screenshot_asset_graph
from orchestration.webserver import reload_running_webserver, webserver_file
from tests.webserver import Webserver, running_webserver

if TYPE_CHECKING:  # what Definitions.resolve_asset_graph returns; Dagster does not export the class
    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="module")
def web(lab_home: Path) -> Iterator[Webserver]:
    with running_webserver(lab_home) as server:
        yield server


@pytest.fixture(scope="module")
def asset_graph(lab_home: Path) -> AssetGraph:
    """The asset graph of the definitions as this process builds them for the module's lab home.

    The module builds its ``defs`` on import, from the environment: it is re-run with the webserver's LAB_HOME,
    then once more as it was, for the tests that come after.
    """
    import orchestration.definitions as definitions

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAB_HOME", str(lab_home))
        graph = importlib.reload(definitions).defs.resolve_asset_graph()
    importlib.reload(definitions)
    return graph


def test_the_webserver_lists_exactly_the_assets_of_the_definitions(web: Webserver, asset_graph: AssetGraph) -> None:
    expected = sorted(list(key.path) for key in asset_graph.get_all_asset_keys())
    assert expected, "the definitions have no assets"
    assert web.asset_keys() == expected


def test_the_webserver_draws_the_same_dependency_edges(web: Webserver, asset_graph: AssetGraph) -> None:
    expected = {tuple(key.path): sorted(tuple(parent.path) for parent in asset_graph.get(key).parent_keys)
                for key in asset_graph.get_all_asset_keys()}
    assert any(expected.values()), "the definitions have no dependency edges"
    assert web.asset_dependencies() == expected


def test_nothing_is_materialized_in_a_fresh_lab_home(web: Webserver) -> None:
    assert all(web.materialization_count(key) == 0 for key in web.asset_keys())


def test_reload_of_the_webserver_recorded_for_the_lab_home(web: Webserver, lab_home: Path) -> None:
    assert webserver_file(lab_home).exists()
    assert reload_running_webserver(lab_home)
    assert web.asset_keys()  # loaded again, and serving


def test_no_reload_without_a_webserver(tmp_path: Path) -> None:
    assert not reload_running_webserver(tmp_path)
    # A record left behind by a webserver that is gone: nothing answers on its port.
    webserver_file(tmp_path).parent.mkdir(parents=True)
    webserver_file(tmp_path).write_text('{"url": "http://127.0.0.1:9"}')
    assert not reload_running_webserver(tmp_path)


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (apt-get install chromium)")
def test_screenshot_of_the_asset_graph(web: Webserver, tmp_path: Path) -> None:
    with browser_page() as page:
        path = screenshot_asset_graph(page, web, tmp_path / "graph.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (GRAPH_VIEWPORT["width"], GRAPH_VIEWPORT["height"])
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 16, "the screenshot is (almost) uniform: nothing was drawn"
