"""Click commands for ``crashcart timeline`` and ``crashcart report``.

Thin: they parse options, call :mod:`timeline`, and write files.  Errors are
raised as :class:`crashcart.errors.CrashcartError` subclasses and mapped to
exit statuses by the root group (``crashcart.cli.CrashcartGroup``).
Register them on the root group with ``cli.add_command(timeline_command)``
and ``cli.add_command(report_command)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import click

from crashcart.errors import CheckFailed

FORMATS = ("md", "jsonl", "svg", "html")


@click.command("timeline")
@click.argument("sources", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: from the -o suffix, else md).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: standard output).")
@click.option("--title", default=None, help="Title of the picture (default: the incident's).")
@click.option("--elf-path", "elf_path", multiple=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory searched for each crash's ELF by build ID, to name the function "
                   "and line in crash events.  Repeatable; also $CRASHCART_ELF_PATH.")
def timeline_command(sources: tuple[Path, ...], fmt: str | None, output: Path | None,
                     title: str | None, elf_path: tuple[Path, ...]) -> None:
    """Lay device events, deploys, config pushes and captures on one clock.

    SOURCES are incident directories (with incident.yaml), evidence bundle
    directories and event files (.csv, .jsonl, .yaml), in any mix.  Device
    uptime is aligned to wall-clock time per boot; every event shows how
    certain its time is.

    \b
    Formats:
      md     a Markdown table of every event
      jsonl  Timesketch-importable JSON lines (message, datetime, timestamp_desc, ...)
      svg    a self-contained picture, one swimlane per device and source
      html   the picture and the key events in one self-contained page
    """
    from timeline.builder import timeline_from_paths
    from timeline.picture import render_html, render_svg
    from timeline.render import write_jsonl, write_markdown

    if fmt is None:
        suffix = output.suffix.lower().lstrip(".") if output is not None else ""
        fmt = {"markdown": "md", "htm": "html"}.get(suffix, suffix)
        if fmt not in FORMATS:
            fmt = "md"
    from collector.decode import ElfCrashDecoder
    from replay.scenario import elf_search_path

    dirs = elf_search_path(elf_path) + [p for p in sources if p.is_dir()]
    tl, incident = timeline_from_paths(sources, decoder=ElfCrashDecoder(dirs))
    heading = title or (incident.title if incident else "Incident timeline")
    for warning in tl.warnings:
        click.echo(f"crashcart: warning: {warning}", err=True)
    with _open_output(output) as out:
        if fmt == "md":
            write_markdown(tl.events, out)
        elif fmt == "jsonl":
            write_jsonl(tl.events, out)
        elif fmt == "svg":
            out.write(render_svg(tl.events, lanes=tl.lanes(), title=heading))
        else:
            out.write(render_html(tl.events, lanes=tl.lanes(), title=heading))
    if output is not None:
        click.echo(f"{output}: {len(tl.events)} events ({fmt})", err=True)


@click.command("report")
@click.argument("incident", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Markdown file to write; the picture goes beside it as "
                   "NAME.timeline.svg (default: print the Markdown; the picture is only "
                   "written with -o).")
@click.option("--elf-path", "elf_path", multiple=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory searched (recursively) for the ELF of each crash's build ID, to "
                   "decode it (function, line, backtrace).  Repeatable; also "
                   "$CRASHCART_ELF_PATH; the incident directory is always searched.")
@click.option("--check", "check_only", is_flag=True,
              help="Only check incident.yaml (schema and blameless language); exit 1 on "
                   "findings.")
def report_command(incident: Path, output: Path | None, elf_path: tuple[Path, ...],
                   check_only: bool) -> None:
    """Write the blameless post-mortem for INCIDENT (a directory with incident.yaml).

    Sections: Summary, Impact, Detection, Timeline (with the picture), Root
    cause and contributing factors, Technical analysis, Evidence (bundles
    cited by sha256), Action items (with replay verification), Lessons
    learned.  Phrases in incident.yaml that read as personal blame are
    reported with a systemic alternative.
    """
    from timeline.blameless import check_incident_language
    from timeline.incident import load_incident
    from timeline.report import build_report, write_report

    loaded = load_incident(incident)
    if check_only:
        findings = check_incident_language(loaded)
        for finding in findings:
            click.echo(f"{loaded.path}:{finding}")
        if findings:
            raise CheckFailed(f"{len(findings)} phrase(s) read as personal blame",
                              path=loaded.path,
                              remedy="rephrase them around systems and conditions")
        click.echo(f"{loaded.path}: ok: schema valid, no personal blame found")
        return
    from collector.decode import ElfCrashDecoder
    from replay.scenario import elf_search_path

    decoder = ElfCrashDecoder(elf_search_path((*elf_path, loaded.directory)))
    if output is None:
        report = build_report(loaded, decoder=decoder)
        sys.stdout.write(report.markdown)
    else:
        report = write_report(loaded, output, decoder=decoder)
        click.echo(f"{output}: post-mortem written; picture {report.picture_name}", err=True)
    for finding in report.language:
        click.echo(f"crashcart: warning: {loaded.path}:{finding}", err=True)
    for build_id in sorted(decoder.missing):
        click.echo(f"crashcart: warning: no ELF with build ID {build_id} under the ELF path: "
                   "its crashes are not decoded (add --elf-path DIR)", err=True)


class _open_output:
    """Standard output, or a file written in full only when the command succeeds."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tmp: Path | None = None
        self.handle: TextIO | None = None

    def __enter__(self) -> TextIO:
        if self.path is None:
            return sys.stdout
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.handle = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115
        return self.handle

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.handle is None or self.tmp is None or self.path is None:
            return
        self.handle.close()
        if exc is None:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)
