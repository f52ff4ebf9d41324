"""Starting a local Ray, or joining a cluster, for a study driver.

A new local Ray keeps Ray's token authentication on. Connecting to a cluster is checked first with a plain TCP
connection, and Ray's own connection messages go to a file named in the one-line error.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

import ray
from ray.exceptions import AuthenticationError

from ablation.study import StudyError
from core.cli import sigterm_as_ctrl_c

RAY_AUTH_MODE = "RAY_AUTH_MODE"


_INIT_KWARGS = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False)


def init_local(num_cpus: int | None) -> None:
    """A new local Ray for this process (token authentication on, as Ray ships it; its notice dropped)."""
    _hide_token_auth_notice()
    ray.init(address="local", num_cpus=num_cpus, object_store_memory=256 * 1024 ** 2, **_INIT_KWARGS)


def start_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to a cluster, or start a local Ray; returns whether we started it (and so must stop it).

    Without ``--address`` (and without ``RAY_ADDRESS``) a new local Ray is always started (``address="local"``):
    plain ``ray.init()`` would join whatever cluster ``/tmp/ray/ray_current_cluster`` names (left by any
    ``ray start`` on the machine, perhaps dead), and two studies started side by side each get their own Ray.

    Token authentication: a new local Ray turns it on and writes its token (``~/.ray/auth_token``), which the
    trials use. Ray connects to an explicit address with authentication off unless told otherwise, so the driver
    asks for token mode there too (``RAY_AUTH_MODE=token`` unless the user set the variable): a cluster started
    with authentication refuses a driver without the token. ``RAY_AUTH_MODE=disabled`` stays the user's choice.
    """
    if ray.is_initialized():  # a notebook's or a test's own Ray: the study joins it, and leaves it running
        joined = ray.get_runtime_context().gcs_address
        if address and address not in (joined, "auto"):
            raise StudyError(f"this process is already connected to the Ray at {joined}, not {address}: call "
                             f"ray.shutdown() first, or leave out the address")
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        init_local(num_cpus)
        sigterm_as_ctrl_c()  # ray.init's own SIGTERM handler exits at once, leaving runs RUNNING
        return True
    _hide_token_auth_notice()
    check_reachable(address)
    os.environ.setdefault(RAY_AUTH_MODE, "token")
    # Ray's C++ client writes each refused or failed connection attempt to stderr (some 20 lines over ~20 s):
    # those lines go to a file, named in the one-line error, and are passed on to stderr when the connection works.
    with tempfile.NamedTemporaryFile(prefix="expat-ray-connect-", suffix=".log", delete=False) as log:
        messages = Path(log.name)
    try:
        with _fd_stderr_to(messages):
            ray.init(address=address, **_INIT_KWARGS)
    except AuthenticationError:
        messages.unlink()
        raise StudyError(f"Ray cluster {address} uses token authentication and this machine has no token: put the "
                         f"head's token (`ray get-auth-token` there) in ~/.ray/auth_token or point RAY_AUTH_TOKEN_PATH "
                         f"at it") from None
    except ConnectionError:
        raise StudyError(f"cannot connect to the Ray cluster at {address}: it is not running there, or it refused "
                         f"this machine's token (use the head's token, from `ray get-auth-token` on the head); "
                         f"Ray's messages: {messages}") from None
    sys.stderr.write(messages.read_text(errors="replace"))
    messages.unlink()
    sigterm_as_ctrl_c()
    return True


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """A plain TCP connection to ``host:port`` first: Ray's own client retries an address where nothing listens
    for minutes, printing a warning every few seconds. (``ray://`` and ``auto`` addresses are left to Ray.)"""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise StudyError(f"cannot connect to the Ray cluster at {address} ({exc.strerror or exc}); start its head "
                         f"there (ray start --head --port {port}) or fix --address") from None


@contextlib.contextmanager
def _fd_stderr_to(path: Path):
    """Point file descriptor 2 (which Ray's C++ code writes to directly) at ``path`` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as target:
            os.dup2(target.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class _TokenAuthNotice(logging.Filter):
    """Drops Ray's notice that token authentication is on (printed at every local start): on is the normal case
    here, and a refused study must leave exactly one line on stderr. Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _hide_token_auth_notice() -> None:
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenAuthNotice) for f in logger.filters):
        logger.addFilter(_TokenAuthNotice())
