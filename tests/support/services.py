"""What tests share about the services: ports, environments, the worker fixture's type."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Protocol

from hallstats.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    """The HALLSTATS_* environment that reproduces ``settings`` in a child process."""
    return settings.as_env()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker(Protocol):
    def __call__(self, settings: Settings, stage: str = "all") -> subprocess.Popen[bytes]: ...
