"""A long-lived ClientApp worker for one SuperNode (opt-in): torch, MONAI and the app stay loaded.

By default Flower 1.41's SuperNode starts a fresh ``flwr-clientapp`` process for every message,
which imports Flower, torch, MONAI and TorchIO again and installs the app again (Flower issue
#3670 asks for a long-lived ClientApp). Started with ``--isolation process``, the SuperNode
starts no process: whoever holds its SuperExec secret claims its ClientApp tasks from its
Runtime API. This worker is that process. It claims each task (``AcquireTask``, signed with the
secret), then does in this process what ``flwr-clientapp`` does: pull the message, context and
FAB, run the ClientApp, push the reply and the context. The app is installed and imported once
per FAB; the heavy libraries are imported before the first task.

Security is the SuperNode's own: the Runtime API listens on 127.0.0.1 only, only a process that
can read the node's 0600 secret can claim a task, and each task's calls carry Flower's one-task
token. The worker listens on nothing.

Example (what ``fedtumor node start --worker`` runs next to the SuperNode)::

    python -m fedtumor.deployment.node_worker --runtime-api-address 127.0.0.1:9094 \\
        --secret-file ~/.fedtumor/node/site-a/superexec.secret --parent-pid 4242
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import Message
from flwr.app.error import Error
from flwr.cli.install import install_from_fab
from flwr.clientapp.client_app import ClientApp, LoadClientAppError
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.config import get_project_dir
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
)
from flwr.supercore import log
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

PRELOAD = ("torch", "monai.networks.nets", "monai.losses", "monai.inferers", "torchio")
DEFAULT_POLL_INTERVAL_S = 0.05
# The message's arrays may still be on their way from the SuperLink when the task is claimed.
# Flower's pull waits 1 s, then 2, 4... up to 10 s for a missing one: made for a process that
# took seconds to start. This one is ready at once, so it asks again sooner.
PULL_FIRST_WAIT_S, PULL_MAX_WAIT_S = 0.05, 0.5
TASK_LOG = (
    "node worker: task %d (%s): claimed to reply pushed %.3f s "
    "(pull %.3f s, of which waiting for the SuperNode to receive it %.3f s; ClientApp %.3f s; push %.3f s), %s"
)


def pull_task_input(client: RuntimeHttpClient):
    """The task's message, context, run and FAB, as Flower's ``pull_task_input``, with short waits.

    Also the seconds spent waiting for parts of the message the SuperNode had not yet received.
    """
    started = time.perf_counter()
    last_missing = started
    task = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id, TaskIdentity.run_id = task.task_id, task.run.run_id
    TaskIdentity.node_id = task.context.node_id
    context, run, fab = context_from_proto(task.context), run_from_proto(task.run), fab_from_proto(task.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node, tree = Node(node_id=context.node_id), pulled.message_object_trees[0]
    pull_object = make_pull_object_fn_protobuf(client.PullObject, node, context.run_id)

    def pull_noting_waits(object_id: str) -> bytes:
        nonlocal last_missing
        try:
            return pull_object(object_id)
        except ObjectUnavailableError:
            last_missing = time.perf_counter()
            raise

    message = pull_and_inflate_object_from_tree(
        tree,
        pull_noting_waits,
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message,
        max_tries_per_object=None,  # bounded by Flower's max_time (2 h), not by a count of quick tries
        initial_backoff=PULL_FIRST_WAIT_S,
        backoff_cap=PULL_MAX_WAIT_S,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower does: its own id is not in it
    return message, context, run, fab, last_missing - started


def _runtime_client(address: str, *interceptors) -> RuntimeHttpClient:
    """A client of the SuperNode's Runtime API: 127.0.0.1 only, plain HTTP, as flower-superexec reaches it."""
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=list(interceptors),
        retry_invoker=make_simple_http_retry_invoker(),
    )


def forget_app_modules(app_dir: Path) -> list[str]:
    """Drop from ``sys.modules`` the modules of an app's top-level packages not loaded from ``app_dir``.

    Flower's loader reuses a module already imported, so a second FAB (or the preloaded copy of
    this project) would otherwise keep running the first one's code. Third-party libraries stay.
    """
    app_dir = Path(app_dir).resolve()
    roots = {entry.stem for entry in app_dir.iterdir() if entry.is_dir() or entry.suffix == ".py"}
    dropped = []
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] not in roots:
            continue
        origin = getattr(module, "__file__", None)
        if origin is None or not Path(origin).resolve().is_relative_to(app_dir):
            dropped.append(name)
            del sys.modules[name]
    importlib.invalidate_caches()
    return dropped


class NodeWorker:
    """Claim and run one SuperNode's ClientApp tasks, one at a time, in this process.

    Args:
        runtime_api_address: the SuperNode's Runtime API, ``127.0.0.1:PORT``.
        secret: the SuperExec secret the SuperNode was started with.
        poll_interval_s: how long to wait before asking again when no task is pending.
    """

    def __init__(self, runtime_api_address: str, secret: bytes, poll_interval_s: float = DEFAULT_POLL_INTERVAL_S):
        if not secret:
            raise ValueError("the SuperExec secret is empty")
        if not 0 < poll_interval_s <= 60:
            raise ValueError(f"poll_interval_s must be in (0, 60] seconds, got {poll_interval_s}")
        self.runtime_api_address = runtime_api_address
        self.poll_interval_s = poll_interval_s
        self.tasks_run = 0
        self.busy = False
        self._app: tuple[str, ClientApp] | None = None  # (FAB hash, its ClientApp): one app in memory
        self._load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        self._claims = _runtime_client(
            runtime_api_address,
            RuntimeVersionHttpInterceptor(component_name="SuperExec"),
            SuperExecAuthHttpInterceptor(
                master_secret=secret, protected_methods=frozenset({"/flwr.proto.Runtime/AcquireTask"})
            ),
        )

    def claim(self) -> str | None:
        """The token of a pending ClientApp task, now claimed; None when none is pending."""
        reply = self._claims.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        return reply.token if reply.HasField("task") and reply.token else None

    def serve(self, stop: threading.Event) -> None:
        """Claim and run tasks until ``stop`` is set."""
        while not stop.is_set():
            token = self.claim()
            if token is None:
                stop.wait(self.poll_interval_s)
                continue
            self.run_task(token)

    def client_app(self, fab_id: str, fab_version: str, fab_content: bytes, fab_hash: str) -> ClientApp:
        """The ClientApp of this FAB: installed and imported on its first task only."""
        if self._app is None or self._app[0] != fab_hash:
            install_from_fab(fab_content, skip_prompt=True)
            app_dir = get_project_dir(fab_id, fab_version, fab_hash)
            forget_app_modules(app_dir)
            self._app = (fab_hash, self._load(fab_id, fab_version, fab_hash))
        return self._app[1]

    def run_task(self, token: str) -> str:
        """Run one claimed task as ``flwr-clientapp`` would; its final sub-status."""
        client = _runtime_client(
            self.runtime_api_address,
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        )
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        message = context = reply = None
        sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        self.busy = True
        claimed = time.perf_counter()
        pull_s = waited_s = app_s = push_s = 0.0
        try:
            heartbeat.start()
            message, context, run, fab, waited_s = pull_task_input(client)
            app = self.client_app(run.fab_id, run.fab_version, fab.content, fab.hash_str)
            app_started = time.perf_counter()
            pull_s = app_started - claimed
            reply = app(message=message, context=context)
            app_s = time.perf_counter() - app_started
            sub_status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # the reply carries the error, as flwr-clientapp's does
            code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            details = f"{type(exc)}:<'{exc}'>"
            if isinstance(exc, LoadClientAppError):
                code, details = ErrorCode.LOAD_CLIENT_APP_EXCEPTION, "An exception was raised when loading `ClientApp`"
            log(ERROR, "ClientApp raised an exception", exc_info=exc)
            if message is not None:
                reply = Message(Error(code=code, reason=details), reply_to=message)
        finally:
            push_started = time.perf_counter()
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client=client, context=context, sub_status=sub_status, details=details)
            finally:
                push_s = time.perf_counter() - push_started
                heartbeat.stop()
                client.close()
                self.busy = False
                self.tasks_run += 1
        kind = message.metadata.message_type if message is not None else "?"
        # Read by scripts/bench_messages.py: the worker's own cost is the first minus the second.
        total = time.perf_counter() - claimed
        log(INFO, TASK_LOG, self.tasks_run, kind, total, pull_s, waited_s, app_s, push_s, sub_status)
        return sub_status

    def close(self) -> None:
        self._claims.close()


def preload(modules: tuple[str, ...] = PRELOAD) -> float:
    """Import the ClientApp's heavy libraries now, before the first task; seconds taken."""
    started = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return time.perf_counter() - started


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one SuperNode's ClientApp tasks in one long-lived process.")
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, 127.0.0.1:PORT")
    parser.add_argument("--secret-file", type=Path, required=True, help="the SuperNode's SuperExec secret (0600)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process (the SuperNode) exits")
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL_S, help="seconds between claims")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        secret = args.secret_file.expanduser().read_bytes()
    except OSError as exc:
        print(f"node worker: cannot read --secret-file {args.secret_file}: {exc.strerror}", file=sys.stderr)
        return 2
    stop = threading.Event()
    worker = NodeWorker(args.runtime_api_address, secret, args.poll_interval)

    def on_signal(signum: int, _frame) -> None:
        stop.set()
        if worker.busy:  # a task in flight is cut short; its reply says so
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)  # SIGINT here when the SuperNode is gone
    log(INFO, "node worker: preloaded the ClientApp's libraries in %.1f s", preload())
    log(INFO, "node worker: serving %s", args.runtime_api_address)
    try:
        worker.serve(stop)
    finally:
        worker.close()
    log(INFO, "node worker: stopped after %d tasks", worker.tasks_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
