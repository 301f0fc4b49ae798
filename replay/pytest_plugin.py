"""pytest plugin: replay scenario files (``*.replay.yaml``) are collected as tests.

The documented way (pytest docs, "Working with non-python tests"):
:func:`pytest_collect_file` returns a :class:`ScenarioFile` node whose
``collect()`` yields one :class:`ScenarioItem` per build; an item runs the
scenario on the simulated board and passes when its expectations are met.
A failure shows expected vs observed for every check and the tail of the
UART transcript (:meth:`ScenarioItem.repr_failure`); :meth:`reportinfo`
points at the scenario file.  JUnit XML comes from pytest's
``--junitxml``; items are independent, so pytest-xdist (``-n 2``) runs them
in parallel.

Options: ``--replay-firmware ELF`` (repeatable) runs every scenario on
those builds instead of its own; ``--replay-elf-path DIR`` adds a
directory to the build-ID search path.

Register with an entry point (``[project.entry-points.pytest11]``,
``crashcart-replay = "replay.pytest_plugin"``), or ``-p replay.pytest_plugin``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crashcart.errors import CrashcartError

SUFFIX = ".replay.yaml"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crashcart-replay", "crashcart replay scenarios (*.replay.yaml)")
    group.addoption("--replay-firmware", action="append", default=[], metavar="ELF",
                    help="run every replay scenario on this build (repeatable)")
    group.addoption("--replay-elf-path", action="append", default=[], metavar="DIR",
                    help="directory searched for ELFs by build ID (repeatable)")


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> ScenarioFile | None:
    if file_path.name.endswith(SUFFIX):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFailed(Exception):
    """The scenario ran and its expectations were not met."""

    def __init__(self, verdict: Any) -> None:
        super().__init__(verdict.summary())
        self.verdict = verdict


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[ScenarioItem]:
        from replay.scenario import load_scenario

        try:
            scenario = load_scenario(self.path)
        except CrashcartError as exc:
            raise self.CollectError(str(exc)) from None
        builds = [Path(b) for b in self.config.getoption("replay_firmware")]
        if not builds:
            yield ScenarioItem.from_parent(self, name=scenario.name, scenario=scenario,
                                           firmware=None)
            return
        for b in builds:
            yield ScenarioItem.from_parent(self, name=f"{scenario.name}[{b.name}]",
                                           scenario=scenario, firmware=b)


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Any, firmware: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.firmware = firmware
        self.verdict: Any = None
        self.add_marker(pytest.mark.qemu)

    def runtest(self) -> None:
        from replay.runner import run_scenario

        search = tuple(Path(p) for p in self.config.getoption("replay_elf_path"))
        self.verdict = run_scenario(self.scenario, firmware=self.firmware, search_path=search)
        self.user_properties.append(("verdict", self.verdict.summary()))
        self.user_properties.append(("virtual_ms", f"{self.verdict.observation.virtual_ns / 1e6:.3f}"))
        if not self.verdict.met:
            raise ScenarioFailed(self.verdict)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str | Any:
        if isinstance(excinfo.value, ScenarioFailed):
            return ("replay scenario expectations not met\n"
                    + excinfo.value.verdict.report())
        if isinstance(excinfo.value, CrashcartError):
            return f"replay scenario could not run: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        build = f" on {self.firmware.name}" if self.firmware is not None else ""
        return self.path, 0, f"replay scenario: {self.name}{build}"
