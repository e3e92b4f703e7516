"""Talking to a running Dagster webserver: its GraphQL endpoint, and reloading its code location.

Whoever starts a webserver for a lab home (``make ui``, the tests' ``running_webserver``) writes
``<lab home>/dagster/webserver.json`` with its URL and removes it on exit. After ``lab`` records a new experiment,
``reload_running_webserver`` asks that webserver to reload the definitions so the UI shows it without a restart.
Only the standard library is used: this runs inside the ``lab`` CLI, where nothing may hang or fail loudly just
because no UI is open.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

WEBSERVER_FILE = "webserver.json"

LOCATIONS_QUERY = """
query Locations {
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name loadStatus } }
    ... on PythonError { message }
  }
}
"""

RELOAD_MUTATION = """
mutation Reload($location: String!) {
  reloadRepositoryLocation(repositoryLocationName: $location) {
    __typename
    ... on WorkspaceLocationEntry {
      name
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message }
    ... on PythonError { message }
  }
}
"""


class GraphQLError(RuntimeError):
    """The webserver answered, with errors (a malformed query, or a failure while resolving it)."""


def webserver_file(lab_home: Path) -> Path:
    """Where the URL of the webserver serving this lab home's Dagster instance is recorded."""
    return lab_home / "dagster" / WEBSERVER_FILE


def graphql(url: str, query: str, variables: dict[str, Any] | None = None, *, timeout: float = 60.0) -> dict:
    """POST a query to ``<url>/graphql`` and return its ``data``; GraphQL errors raise ``GraphQLError``."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.load(response)
    if answer.get("errors"):
        raise GraphQLError(json.dumps(answer["errors"], indent=2))
    return answer["data"]


def location_names(url: str, *, timeout: float = 60.0) -> list[str]:
    """The code locations the webserver serves (one for ``-m orchestration.definitions``)."""
    workspace = graphql(url, LOCATIONS_QUERY, timeout=timeout)["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise GraphQLError(workspace.get("message", workspace["__typename"]))
    return [entry["name"] for entry in workspace["locationEntries"]]


def reload_location(url: str, location: str, *, timeout: float = 120.0) -> None:
    """Reload one code location; the mutation returns once the new definitions are loaded (or failed to load)."""
    result = graphql(url, RELOAD_MUTATION, {"location": location}, timeout=timeout)["reloadRepositoryLocation"]
    if result["__typename"] != "WorkspaceLocationEntry":
        raise GraphQLError(f"reloading {location}: {result['__typename']}: {result.get('message', '')}")
    loaded = result["locationOrLoadError"]
    if loaded is None or loaded["__typename"] != "RepositoryLocation":
        raise GraphQLError(f"reloading {location}: {(loaded or {}).get('message', 'no location loaded')}")


def reload_running_webserver(lab_home: Path) -> bool:
    """Reload the definitions of the webserver recorded for this lab home; False, quietly, if none answers.

    The first request has a short timeout, so a stale ``webserver.json`` (a UI killed without cleanup) costs two
    seconds at most; the reload itself waits for the definitions to be imported again, which takes a while.
    """
    try:
        url = json.loads(webserver_file(lab_home).read_text())["url"]
        locations = location_names(url, timeout=2.0)
        for location in locations:
            reload_location(url, location)
    except (OSError, ValueError, KeyError, TypeError, GraphQLError):
        # OSError covers a missing file, a refused connection and timeouts (urllib.error.URLError included).
        return False
    return bool(locations)

