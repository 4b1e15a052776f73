"""``radnode synth ...``: write synthetic DICOM data from the command line.

Why: demos, benchmarks and manual checks against a PACS need the same
deterministic studies the tests use, without writing Python.
"""

from __future__ import annotations

from pathlib import Path

import click
import structlog

from radnode.synth.mr_study import SERIES_LABELS, generate_mr_study

log = structlog.get_logger(__name__)


@click.group(name="synth")
def synth() -> None:
    """Generate synthetic DICOM studies (no patient data)."""


@synth.command(name="study")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
              help="Folder to write <series_number>/<instance>.dcm into.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Same seed, same study (pixels, headers and UIDs).")
@click.option("--slices", default=12, show_default=True, type=click.IntRange(min=1),
              help="Images per axial series (the localizer always has 3).")
@click.option("--rows", default=64, show_default=True, type=click.IntRange(min=8))
@click.option("--columns", default=64, show_default=True, type=click.IntRange(min=8))
@click.option("--series", "series", multiple=True, type=click.Choice(SERIES_LABELS),
              help="Series to write (repeatable); default: all.")
@click.option("--accession", default=None, help="AccessionNumber (default derived from the seed).")
@click.option("--patient-id", default=None, help="PatientID (default derived from the seed).")
def study(out_dir: Path, seed: int, slices: int, rows: int, columns: int, series: tuple[str, ...],
          accession: str | None, patient_id: str | None) -> None:
    """Write a multi-series brain MR study and print a summary."""
    result = generate_mr_study(out_dir, seed=seed, slices=slices, rows=rows, columns=columns,
                               series=series or SERIES_LABELS, accession=accession,
                               patient_id=patient_id)
    click.echo(f"study {result.study_instance_uid}")
    click.echo(f"  accession {result.accession}  patient {result.patient_id} ({result.patient_name})"
               f"  vendor {result.vendor}")
    for s in result.series:
        click.echo(f"  series {s.series_number:>2} {s.label:<9} {s.instance_count:>4} images"
                   f"  {s.description!r}  {s.series_instance_uid}")
    click.echo(f"{result.instance_count} files written to {result.out_dir}")


def _register_glioma() -> None:
    from radnode.synth.glioma_commands import register

    register(synth)


_register_glioma()


def _register_hemorrhage() -> None:
    from radnode.synth.hemorrhage_commands import register

    register(synth)


_register_hemorrhage()


def _register_metastasis() -> None:
    from radnode.synth.metastasis_commands import register

    register(synth)


_register_metastasis()
