"""The tiny versions of the law presets and of wsd_vs_cosine (its branches), end to end on a lab home of their
own: test_presets_e2e.py's check, in a second file so that another worker runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_presets_e2e import LAW_PRESETS, check_tiny_preset


@pytest.mark.e2e
@pytest.mark.parametrize("name", LAW_PRESETS)
def test_a_tiny_law_preset_runs_and_its_report_is_written_from_the_lab_home(preset_lab: Path, tmp_path: Path,
                                                                            name: str) -> None:
    check_tiny_preset(preset_lab, tmp_path, name)
