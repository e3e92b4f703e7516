"""Placeholder until the ui branch lands."""

from pathlib import Path


def reload_running_webserver(lab_home: Path) -> bool:
    return False
