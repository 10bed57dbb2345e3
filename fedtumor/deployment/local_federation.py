"""Try a live federation on one machine: TLS, node authentication, real SuperLink and SuperNodes.

    scripts/local_federation.sh --sites 2 --rounds 2

Makes a CA, a SuperLink certificate and one key pair per site in a temporary folder,
generates a small synthetic cohort (cached in ``$FEDTUMOR_HOME``) and gives each site its
own data folder, starts a SuperLink on 127.0.0.1 behind nginx (the centre's front door, which
forwards only the Fleet API) and one SuperNode per site connecting through it, registers the
sites' public keys, submits this app with ``flwr run`` on the SuperLink's local listener,
judges the run by its status, prints where the results are, and stops every process it
started, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from fedtumor.core.errors import ConfigError, DataError
from fedtumor.deployment.flwr_runs import SUCCESS_STATUS, stream_run, validate_run_config, wait_for_run
from fedtumor.deployment.loopback import CONNECTION, LoopbackFederation
from fedtumor.deployment.proxy import INSTALL_HINT, nginx_binary

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
console = Console(highlight=False, soft_wrap=True)  # paths stay whole, for people and parsers


def _stop_on_sigterm(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt  # the same clean-up path as Ctrl-C


def _prepare_data(workdir: Path, sites: int, subjects: int, test_subjects: int, seed: int) -> dict[str, Path]:
    """A cached synthetic cohort laid out as per-site folders plus the server's test folder."""
    from data_loaders.site_folders import export_heldout_folder, export_site_folders
    from data_loaders.synthetic import generate_cohort
    from fedtumor.core.config import fedtumor_home

    cohort = fedtumor_home() / "cohorts" / f"loopback-sites{sites}-subj{subjects}-test{test_subjects}-seed{seed}"
    generate_cohort(cohort, n_sites=sites, n_subjects=subjects, seed=seed, n_test=test_subjects)
    export_heldout_folder(cohort, workdir / "coordinator")
    return export_site_folders(cohort, workdir / "sites")


def run_local_federation(args: argparse.Namespace) -> int:
    from fedtumor.security.certs import make_superlink_certificates
    from fedtumor.security.node_keys import make_node_key

    started = time.perf_counter()
    app_dir = args.app_dir.expanduser().resolve()
    out_dir = (args.out or app_dir / "outputs").expanduser().resolve()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fedtumor-loopback-")).expanduser().resolve()
    run_name = args.run_name or f"loopback-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    # The coordinating centre's data-dir holds only the held-out test subjects.
    # A warm-up pays where the ClientApp outlives its message: a node worker loads its site meanwhile.
    warm_up = "warm-up=true " if args.node_worker else ""
    run_config = (
        f"num-server-rounds={args.rounds} min-available-nodes={args.sites} output-dir='{out_dir}' "
        f"run-name='{run_name}' data-dir='{workdir / 'coordinator'}' {warm_up}{args.run_config}"
    ).strip()
    if args.workdir and workdir.exists() and any(workdir.iterdir()):
        # It is deleted afterwards (unless --keep): never take over a folder that holds something.
        console.print(f"[bold red]error:[/] --workdir {workdir} is not empty; give a new or empty folder")
        return EXIT_BAD_INPUT
    if problem := validate_run_config(run_config, app_dir):
        console.print(f"[bold red]error:[/] {problem}")
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return EXIT_BAD_INPUT
    use_proxy = not (args.insecure or args.no_proxy)
    if use_proxy and nginx_binary() is None:
        console.print(f"[bold red]error:[/] nginx is not installed: {INSTALL_HINT}, or run with --no-proxy")
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return EXIT_BAD_INPUT
    if args.insecure:
        console.print(
            "[bold yellow]warning:[/] --insecure: no TLS, no node authentication and no proxy; model updates "
            "travel in clear text and any process may join. Never use this outside a test machine."
        )
    elif args.no_proxy:
        console.print(
            "[bold yellow]warning:[/] --no-proxy: SuperNodes connect to the SuperLink's own port, where the "
            "Control API (flwr run, ls, log, supernode register) is open to anyone who reaches it."
        )
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"working folder (certificates, keys, site folders, logs): {workdir}")
    certs = None if args.insecure else make_superlink_certificates(workdir / "certs", ["localhost"], ["127.0.0.1"])
    federation = LoopbackFederation(workdir, certs, node_auth=not args.insecure, proxy=use_proxy)
    try:
        site_folders = _prepare_data(workdir, args.sites, args.subjects, args.test_subjects, args.seed)
        with console.status("starting the SuperLink"):
            address = federation.start_superlink()
        console.print(f"SuperLink on {address} ({'insecure' if args.insecure else 'TLS, node authentication on'})")
        if use_proxy:
            console.print(f"proxy on {federation.fleet_address}: SuperNodes connect here, only /v1/fleet/ passes")
        for site_id, folder in site_folders.items():
            key = None
            if not args.insecure:
                key_files = make_node_key(workdir / "keys", site_id)
                node_id = federation.register_node(key_files.public_key)
                key = key_files.private_key
                console.print(f"registered {site_id}'s public key: node {node_id}")
            with console.status(f"starting the SuperNode of {site_id}"):
                federation.start_supernode(site_id, folder, key, worker=args.node_worker)
            worker = ", its ClientApp in a node worker" if args.node_worker else ""
            console.print(f"SuperNode {site_id} joined, data-dir {folder}{worker}")
        run_started = time.perf_counter()
        run_id = stream_run(CONNECTION, federation.env, run_config, app_dir=app_dir, echo=console.out)
        if run_id is None:
            console.print("[bold red]error:[/] `flwr run` printed no run id; see the output above")
            return EXIT_FAILED
        status = wait_for_run(run_id, CONNECTION, federation.env, timeout_s=args.timeout)
        run_seconds = time.perf_counter() - run_started
        total_seconds = time.perf_counter() - started
        colour = "green" if status == SUCCESS_STATUS else "red"
        console.print(
            f"run {run_id}: [bold {colour}]{status}[/] (run {run_seconds:.1f}s, "
            f"everything including set-up {total_seconds:.1f}s)"
        )
        console.print(f"results: {out_dir / run_name}")
        return 0 if status == SUCCESS_STATUS else EXIT_FAILED
    except (ConfigError, DataError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return EXIT_BAD_INPUT
    except RuntimeError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        console.print("interrupted; stopping every process this script started")
        return EXIT_INTERRUPTED
    finally:
        with console.status("stopping the SuperNodes and the SuperLink"):
            federation.close()
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=2, help="hospitals, one SuperNode each (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="federated rounds (default 2)")
    parser.add_argument("--subjects", type=int, default=12, help="subjects over all sites, 3+ a site (default 12)")
    parser.add_argument("--test-subjects", type=int, default=2, help="held-out test subjects (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic cohort seed (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default outputs/ in the app folder)")
    parser.add_argument("--run-name", default="", help="name of the run folder (default loopback-<time>)")
    parser.add_argument("--run-config", default="", help='more run-config overrides, e.g. "learning-rate=0.005"')
    parser.add_argument("--workdir", type=Path, default=None, help="new folder for certificates, keys, logs")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs) afterwards")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run (default 3600)")
    parser.add_argument(
        "--insecure", action="store_true", help="no TLS, no node authentication, no proxy (prints a warning)"
    )
    parser.add_argument(
        "--no-proxy", action="store_true", help="SuperNodes connect to the SuperLink directly (prints a warning)"
    )
    parser.add_argument(
        "--node-worker",
        action="store_true",
        help="run each SuperNode's ClientApp in one long-lived process (docs/deployment.md, node worker)",
    )
    parser.add_argument(
        "--app-dir", type=Path, default=Path("."), help="the Flower app to submit (default: the current folder)"
    )
    args = parser.parse_args(argv)
    if args.sites < 1 or args.rounds < 1 or args.subjects < 3 * args.sites or args.test_subjects < 1:
        # Three subjects per site: at least two to train on and one to validate with.
        parser.error("need --sites >= 1, --rounds >= 1, --subjects >= 3 x --sites and --test-subjects >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # A shell starts background jobs with SIGINT ignored, and Python keeps that: Ctrl-C must still clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return run_local_federation(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
