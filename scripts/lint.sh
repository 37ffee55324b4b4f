#!/usr/bin/env bash
# Lint everything: ansible-lint (production profile), yamllint, ruff (lint + format check), mypy.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$VPS_BRAIN_ROOT"
echo "==> ansible-lint (production profile)"
ansible-lint -q
echo "==> yamllint"
yamllint -s .
echo "==> ruff"
ruff check collector/src collector/tests bench molecule scripts/ansible_plugins
ruff format --check collector/src collector/tests bench molecule scripts/ansible_plugins
echo "==> mypy (strict)"
(cd collector && mypy src)
echo "lint: all clean"
