# shellcheck shell=bash
# Sourced by every harness script: the venv, the project-local podman config, the image name.
VPS_BRAIN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VPS_BRAIN_ROOT
export PATH="$VPS_BRAIN_ROOT/.venv/bin:$PATH"
export CONTAINERS_CONF="$VPS_BRAIN_ROOT/scripts/podman/containers.conf"
export ANSIBLE_CONFIG="$VPS_BRAIN_ROOT/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$VPS_BRAIN_ROOT/collections"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}"
export PY_COLORS="${PY_COLORS:-0}"
# The locally built Debian 12 systemd image every scenario and the lab run on.
export VPS_BRAIN_IMAGE="localhost/vps-brain-debian12:latest"
