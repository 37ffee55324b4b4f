# Copyright: the marketdata.vps_brain authors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's and the Molecule scenarios' connection: containers.podman.podman with pipelining.

The stock podman connection runs every task with three `podman exec` calls and one `podman mount`
(make a temporary directory, make the module executable, run it), because it cannot feed a
module on standard input. `podman exec -i` can: with pipelining one task is one `podman exec`,
as it is over SSH with pipelining on a real host. The container is mounted only when a file is
copied in or out.
"""

from __future__ import annotations

DOCUMENTATION = """
name: podman_pipelined
short_description: Run tasks in a podman container with one podman exec each (pipelining)
description:
  - The containers.podman.podman connection, with pipelining through C(podman exec -i), and the
    container's file system mounted only when a file is copied.
  - Harness of the lab (scripts/lab.sh) and the Molecule scenarios; not part of the collection.
author: marketdata.vps_brain authors
options:
  remote_addr:
    description: The name or ID of the container.
    default: inventory_hostname
    vars:
      - name: ansible_host
      - name: inventory_hostname
      - name: ansible_podman_host
  remote_user:
    description: The user to run commands as inside the container (podman exec --user).
    ini:
      - section: defaults
        key: remote_user
    env:
      - name: ANSIBLE_REMOTE_USER
    vars:
      - name: ansible_user
  podman_extra_args:
    description: Extra arguments for every podman command.
    default: ''
    ini:
      - section: defaults
        key: podman_extra_args
    vars:
      - name: ansible_podman_extra_args
    env:
      - name: ANSIBLE_PODMAN_EXTRA_ARGS
  podman_executable:
    description: The podman executable.
    default: podman
    vars:
      - name: ansible_podman_executable
    env:
      - name: ANSIBLE_PODMAN_EXECUTABLE
  pipelining:
    description: Feed modules on standard input instead of copying them into the container.
    type: boolean
    default: true
    env:
      - name: ANSIBLE_PODMAN_PIPELINING
    vars:
      - name: ansible_pipelining
"""

# Ansible plugins put DOCUMENTATION first.
import shlex  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.common.text.converters import to_native  # noqa: E402
from ansible.plugins.connection import ConnectionBase  # noqa: E402
from ansible_collections.containers.podman.plugins.connection.podman import (  # noqa: E402
    Connection as PodmanConnection,
)


class Connection(PodmanConnection):  # type: ignore[misc]
    """podman exec -i for pipelined modules; mount the container only to copy files."""

    transport = "podman_pipelined"
    has_pipelining = True

    def _connect(self) -> Any:
        # The parent mounts the container here, for every task; only file copies need the mount.
        ConnectionBase._connect(self)
        self._connected = True
        return self

    def _mount(self) -> None:
        if self._mount_point is None:
            PodmanConnection._connect(self)

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = False) -> Any:
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        args = ["exec", "-i"] if in_data is not None else ["exec"]
        if self.user:
            args += ["--user", self.user]
        argv = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        return self._podman(args, argv, in_data)

    def put_file(self, in_path: str, out_path: str) -> None:
        self._mount()
        super().put_file(in_path, out_path)

    def fetch_file(self, in_path: str, out_path: str) -> None:
        self._mount()
        super().fetch_file(in_path, out_path)
