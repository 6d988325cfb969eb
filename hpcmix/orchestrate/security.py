"""A scheduler no other user can reach: TLS for SLURM pools, the dashboard on localhost.

On a shared login node a plain-TCP Dask scheduler runs code for anyone who finds its port. A
SLURM pool therefore speaks TLS by default (``tls: true``): distributed's ``Security.temporary()``
makes a throw-away CA and certificate in memory; dask-jobqueue writes the workers' copy into
``tls_directory`` (``shared_temp_directory``), which must sit on a file system the worker jobs see
(the home directory by default). The folder is made private (mode 0700) and each file is the
owner's only (0600): the worker jobs run as the same user, no one else can read the key. The
scheduler then requires a certificate from that CA of every client and worker (mutual TLS): a
plain-TCP or certificate-less connection is refused. The dashboard has no such check, so it binds
to localhost and ``tunnel_command`` prints the ssh tunnel to it.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from typing import Any
from urllib.parse import urlsplit

from ..errors import HpcmixError

#: where the workers' certificate files go unless the site says otherwise
DEFAULT_TLS_DIRECTORY = "~/.hpcmix/tls"


class TLSSetupError(HpcmixError, RuntimeError):
    """TLS was asked for and cannot be set up: the certificate folder, or the cryptography package."""


def tls_directory(path: str | None, *, where: str) -> str:
    """The certificate folder ``path`` (default ``~/.hpcmix/tls``), made private and checked writable."""
    folder = os.path.abspath(os.path.expandvars(os.path.expanduser(path or DEFAULT_TLS_DIRECTORY)))
    fix = (f"set tls_directory in {where} to a folder you can write that the worker jobs can read (a shared "
           "file system, e.g. under your home), or tls: false to run without TLS (anyone on the login node who "
           "finds the scheduler's port could then run code as you)")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.stat(folder)
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(folder, 0o700)   # the workers' private key goes in here
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".hpcmix-write-test."):
            pass
    except OSError as err:
        raise TLSSetupError(f"TLS certificate folder {folder!r} is not usable ({err.strerror or err}); {fix}") from None
    return folder


def pool_security(settings: dict[str, Any], *, where: str) -> dict[str, Any]:
    """The SLURMCluster keywords for a pool's TLS (none with ``tls: false``)."""
    if not settings["tls"]:
        return {}
    try:
        from distributed.security import Security

        security = Security.temporary()
    except ImportError:
        raise TLSSetupError(f"{where} asks for TLS (tls: true), which needs the 'cryptography' package: "
                            "pip install cryptography (or set tls: false)") from None
    return {"security": security, "protocol": "tls://",
            "shared_temp_directory": tls_directory(settings["tls_directory"], where=where)}


def dashboard_is_local(address: str | None) -> bool:
    """Does a ``dashboard_address`` setting bind to this machine only ('localhost:8787', '127.0.0.1:0')?"""
    return bool(address) and address.rsplit(":", 1)[0].strip("[]") in ("localhost", "127.0.0.1", "::1")


def tunnel_command(address: str | None, dashboard_link: str | None, *, host: str | None = None) -> str | None:
    """The ssh tunnel to a dashboard bound (``address``, the setting) to localhost on ``host`` (this
    machine), with its port from ``dashboard_link``; None for a dashboard bound elsewhere, or none."""
    if not dashboard_link or not dashboard_is_local(address):
        return None
    url = urlsplit(dashboard_link)
    if url.port is None:
        return None
    host = host or socket.gethostname()
    return (f"ssh -N -L {url.port}:localhost:{url.port} {host}   "
            f"(then open http://localhost:{url.port}{url.path} on your machine)")


def remove_worker_certificates(cluster: Any) -> None:
    """Delete the certificate files dask-jobqueue wrote for ``cluster``'s workers (it keeps them open as
    temporary files until the cluster is garbage-collected): the key leaves the disk when the pool closes."""
    for key in ("ca_file", "cert", "key"):
        f = getattr(cluster, f"_job_{key}", None)
        if f is not None:
            f.close()   # a NamedTemporaryFile: closing it removes it
