"""The `fedtumor` command line: everything that is not `flwr run`.

This module is the composition root: its commands import `data_loaders` lazily, so the
rest of `fedtumor/` stays free of data-layout and Flower code.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from fedtumor.core.errors import ConfigError, DataError
from fedtumor.deployment.centre_cli import centre_app
from fedtumor.run.files import MODEL_FILES, RESUME_FILE

app = typer.Typer(
    name="fedtumor",
    help="Federated brain-tumour segmentation: data, metrics, reports and predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
error_console = Console(stderr=True)

EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2


class SynthShape(str, Enum):
    s64 = "64"
    s96 = "96"
    s128 = "128"


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print one line naming what is wrong and exit; never a traceback."""
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the cohort into."),
    sites: int = typer.Option(4, "--sites", min=1, help="Number of sites (partitions)."),
    subjects: int = typer.Option(24, "--subjects", min=1, help="Training subjects over all sites."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same cohort."),
    shape: SynthShape = typer.Option(SynthShape.s64, "--shape", help="Edge length of the cubic volumes."),
    test_subjects: int = typer.Option(
        None, "--test-subjects", min=1, help="Held-out test subjects no site trains on (default: about 20%)."
    ),
) -> None:
    """Write a synthetic multi-site cohort in the BraTS 2021 layout plus partitioning.csv."""
    from data_loaders.synthetic import generate_cohort

    try:
        info = generate_cohort(
            out, n_sites=sites, n_subjects=subjects, seed=seed, shape=int(shape.value), n_test=test_subjects
        )
    except (DataError, ConfigError, ValueError) as exc:
        fail(str(exc))
    state = "reused cached" if info.cached else "wrote"
    console.print(
        f"{state} cohort at {info.root}: {info.n_subjects} site subjects over {info.n_sites} sites, "
        f"{info.n_test} held-out test subjects; montage {info.montage}"
    )


@app.command("check-data")
def check_data(
    data_dir: Path = typer.Argument(..., help="A site folder (or a whole cohort) in a BraTS layout."),
    partitions: Path = typer.Option(None, "--partitions", help="FeTS partition CSV to check against."),
) -> None:
    """Validate every subject before a site joins: exit 0 when clean, 1 with problems."""
    from data_loaders.validation import check_data_dir, print_report

    try:
        report = check_data_dir(data_dir, partitions)
    except DataError as exc:
        fail(str(exc))
    print_report(report, console)
    if report.problems:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command()
def evaluate(
    prediction: Path = typer.Argument(..., help="Predicted segmentation NIfTI."),
    reference: Path = typer.Argument(..., help="Reference segmentation NIfTI."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Score one segmentation against a reference: Dice, HD95, sensitivity, specificity per region."""
    from fedtumor.core.metrics import score_files

    try:
        scores = score_files(prediction, reference)
    except DataError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(scores, indent=2) + "\n")
        return
    from rich.table import Table

    metric_names = list(next(iter(scores.values())).keys())
    table = Table(title=f"{prediction.name} vs {reference.name}")
    table.add_column("region")
    for name in metric_names:
        table.add_column(name, justify="right")
    for region, values in scores.items():
        table.add_row(region, *(f"{values[name]:.4f}" for name in metric_names))
    console.print(table)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder written by the ServerApp.")) -> None:
    """Re-draw a run's plots and print its per-round table."""
    from fedtumor.run.report import print_run_report

    try:
        print_run_report(run_dir, console)
    except DataError as exc:
        fail(str(exc))


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="A run folder (or its final_model.pt)."),
    subject: Path = typer.Option(..., "--subject", help="A subject folder in a BraTS layout."),
    out: Path = typer.Option(..., "--out", help="Output segmentation, e.g. pred.nii.gz."),
) -> None:
    """Segment a new case with a run's global model; writes BraTS 2021 label values."""
    from data_loaders.inference import predict_subject_file

    try:
        path = predict_subject_file(model, subject, out)
    except (DataError, ConfigError) as exc:
        fail(str(exc))
    console.print(f"wrote {path}")


def _baseline_setup(run_config: str, app_dir: Path | None, sites: int | None, torch_threads: int, kind: str):
    """(config, number of sites, run folder) for a baseline, read exactly as a federation reads them.

    The config is ``--app-dir``'s ``[tool.flwr.app.config]``; without ``--app-dir``, the current
    folder's when it is a Flower app (as `flwr run .` would read it), else the packaged defaults
    (the same values fedtumor ships in its own pyproject.toml). Then the ``--run-config`` overrides.
    """
    import datetime as dt

    import torch

    from fedtumor.baselines.sites import number_of_sites
    from fedtumor.core.config import find_app_dir, read_run_config, resolve_output_dir
    from fedtumor.federation.settings import check_federation_keys

    config = check_federation_keys(read_run_config(run_config, app_dir or find_app_dir(Path.cwd())))
    n_sites = number_of_sites(config, sites)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    run_name = config.run_name or f"{kind}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    return config, n_sites, resolve_output_dir(config) / run_name


def _baseline_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _print_final(kind: str, summary: dict, run_dir: Path) -> None:
    final = summary["final"]
    console.print(
        f"{kind}: {summary['rounds']} rounds x {summary['epochs_per_round']} epochs in {summary['wall_time_s']:.1f}s; "
        f"held-out Dice ET {final['dice_et']:.3f} TC {final['dice_tc']:.3f} WT {final['dice_wt']:.3f}; "
        f"results in {run_dir}"
    )


# "\\[": a literal bracket, not rich markup
_RUN_CONFIG_HELP = "Overrides of pyproject's \\[tool.flwr.app.config], as for `flwr run --run-config`."
_APP_DIR_HELP = (
    "Flower app folder whose \\[tool.flwr.app.config] is the base (default: the current folder if it is one, "
    "else fedtumor's packaged defaults)."
)
_SITES_HELP = "Sites of a synthetic cohort (a simulation's num-supernodes); read from the partition CSV with data-dir."
_THREADS_HELP = "PyTorch threads for this process (0: PyTorch's default, every core)."


@app.command()
def centralized(
    run_config: str = typer.Option("", "--run-config", help=_RUN_CONFIG_HELP),
    app_dir: Path = typer.Option(None, "--app-dir", help=_APP_DIR_HELP),
    sites: int = typer.Option(None, "--sites", min=1, help=_SITES_HELP),
    torch_threads: int = typer.Option(0, "--torch-threads", min=0, help=_THREADS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Pooled-data baseline: one model on every site's training subjects, same budget as the federation."""
    from fedtumor.baselines.centralized import run_centralized

    try:
        config, n_sites, run_dir = _baseline_setup(run_config, app_dir, sites, torch_threads, "centralized")
        with _baseline_progress() if progress else _no_progress() as bars:
            summary = run_centralized(config, n_sites, run_dir, bars)
    except (DataError, ConfigError, FileExistsError) as exc:
        fail(str(exc))
    _print_final("centralized", summary, run_dir)


@app.command()
def local(
    run_config: str = typer.Option("", "--run-config", help=_RUN_CONFIG_HELP),
    app_dir: Path = typer.Option(None, "--app-dir", help=_APP_DIR_HELP),
    sites: int = typer.Option(None, "--sites", min=1, help=_SITES_HELP),
    only: list[str] = typer.Option(None, "--only", help="Train only this site (repeatable), e.g. --only site-3."),
    torch_threads: int = typer.Option(0, "--torch-threads", min=0, help=_THREADS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Local-only baselines: one model per site on its own data, same budget as in the federation."""
    from fedtumor.baselines.local import run_local

    try:
        config, n_sites, run_dir = _baseline_setup(run_config, app_dir, sites, torch_threads, "local")
        with _baseline_progress() if progress else _no_progress() as bars:
            summary = run_local(config, n_sites, run_dir, bars, only_sites=only or None)
    except (DataError, ConfigError, FileExistsError, ValueError) as exc:
        fail(str(exc))
    _print_final("mean local model", summary, run_dir)
    for site, final in summary["per_site_final"].items():
        console.print(f"  {site}: Dice ET {final['dice_et']:.3f} TC {final['dice_tc']:.3f} WT {final['dice_wt']:.3f}")


def _no_progress():
    import contextlib

    return contextlib.nullcontext(None)


@app.command()
def certs(
    out: Path = typer.Option(..., "--out", help="Folder for ca.crt, ca.key, server.pem, server.key."),
    host: list[str] = typer.Option([], "--host", help="DNS name the SuperLink is reached by (repeatable)."),
    ip: list[str] = typer.Option([], "--ip", help="IP address the SuperLink is reached by (repeatable)."),
    days: int = typer.Option(365, "--days", help="Validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace existing files (re-register every node's trust)."),
) -> None:
    """Make a CA and a SuperLink TLS certificate for these names (private keys mode 600)."""
    from fedtumor.security.certs import make_superlink_certificates, read_certificate, subject_alternative_names

    try:
        files = make_superlink_certificates(out, host, ip, valid_days=days, overwrite=force)
    except ConfigError as exc:
        fail(str(exc))
    names = ", ".join(subject_alternative_names(read_certificate(files.server_cert)))
    console.print(f"wrote {files.server_cert} and {files.server_key} for the SuperLink (valid for {names})")
    console.print(f"wrote {files.ca_cert}: give it to every SuperNode and every `flwr` user")
    console.print(f"wrote {files.ca_key}: keep it private, offline if you can")


@app.command("cert-info")
def cert_info(
    certificate: Path = typer.Argument(..., help="A PEM certificate, e.g. the ca.crt the centre sent."),
) -> None:
    """Show a certificate's names, validity and SHA-256 fingerprint (compare it with the sender's)."""
    from fedtumor.security.certs import fingerprint_sha256, read_certificate, subject_alternative_names

    try:
        cert = read_certificate(certificate)
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"subject: {cert.subject.rfc4514_string()}", soft_wrap=True)
    console.print(f"issuer: {cert.issuer.rfc4514_string()}", soft_wrap=True)
    console.print(f"valid for: {', '.join(subject_alternative_names(cert)) or '-'}", soft_wrap=True)
    console.print(
        f"valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )
    console.print(f"SHA-256 fingerprint: {fingerprint_sha256(cert)}", soft_wrap=True)


@app.command("node-key")
def node_key(
    name: str = typer.Option(..., "--name", help="The site's name, e.g. site-a."),
    out: Path = typer.Option(..., "--out", help="Folder for NAME.key (private) and NAME.pub."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key pair."),
) -> None:
    """Make a SuperNode's authentication key pair; the coordinating centre registers NAME.pub."""
    from fedtumor.security.node_keys import make_node_key

    try:
        files = make_node_key(out, name, overwrite=force)
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"wrote {files.private_key}: stays at the site (flower-supernode --auth-supernode-private-key)")
    console.print(f"wrote {files.public_key}: send it to the coordinating centre (flwr supernode register)")


audit_app = typer.Typer(help="Audit a run: check its hash-chained audit log, hash a site's data.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(run_dir: Path = typer.Argument(..., help="A run folder written by the ServerApp.")) -> None:
    """Recompute audit.jsonl's hash chain and the saved models' hashes: exit 0 intact, 1 altered, 2 unreadable."""
    from fedtumor.run.audit import verify_run

    try:
        report = verify_run(run_dir, model_files=(*MODEL_FILES, RESUME_FILE))
    except (FileNotFoundError, OSError) as exc:
        fail(str(exc))
    if report.problem is not None:
        error_console.print(f"[bold red]altered:[/] {escape(str(report.problem))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_PROBLEMS)
    models = ", ".join(report.models_checked) or "none"
    console.print(f"intact: {report.entries} entries, {report.rounds} rounds; model hashes match for {models}")


@audit_app.command("manifest")
def audit_manifest(data_dir: Path = typer.Argument(..., help="A site folder in a BraTS layout.")) -> None:
    """Print the data-manifest hash of a deployed site's folder (every subject in it), as its replies carry it."""
    from data_loaders.layouts import discover_subjects
    from data_loaders.manifest import site_manifest

    try:
        entries, sha256 = site_manifest(discover_subjects(data_dir))
    except (DataError, OSError) as exc:
        fail(str(exc))
    console.print(f"{sha256}  {len(entries)} files in {data_dir}")


strategies_app = typer.Typer(
    help="Aggregation strategies: list the installed plugins, check one.", no_args_is_help=True
)
app.add_typer(strategies_app, name="strategies")


@strategies_app.command("list")
def strategies_list() -> None:
    """Installed strategies (entry-point group fedtumor.strategies) and their parameters."""
    from rich.table import Table

    from fedtumor.federation.registry import load_registry

    registry = load_registry()
    table = Table(title="fedtumor strategies")
    for column in ("name", "description", "parameters (strategy-config defaults)", "client hooks"):
        table.add_column(column)
    for name, plugin in sorted(registry.plugins.items()):
        params = " ".join(f"{key}={parameter.default!r}" for key, parameter in plugin.parameters.items()) or "-"
        table.add_row(name, plugin.description, params, "yes" if plugin.client_hooks else "-")
    console.print(table)
    for name, reason in sorted(registry.broken.items()):
        error_console.print(f"[bold red]failed to load:[/] {escape(name)}: {escape(reason)}", highlight=False)


@strategies_app.command("check")
def strategies_check(name: str = typer.Argument(..., help="A strategy that `strategies list` shows.")) -> None:
    """Run a strategy through the conformance kit (a short in-process federation): exit 0 when it conforms, 1 not."""
    from fedtumor.federation.conformance import run_kit

    try:
        conforms = run_kit(name, console)
    except ConfigError as exc:
        fail(str(exc))
    if not conforms:
        raise typer.Exit(EXIT_PROBLEMS)


app.add_typer(centre_app, name="centre")  # the coordinating centre's commands, e.g. its proxy


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
