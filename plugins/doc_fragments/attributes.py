# -*- coding: utf-8 -*-
# Copyright: the marketdata.vps_brain authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attributes the collection's modules share (one home for their documentation)."""

from __future__ import annotations


class ModuleDocFragment:
    # Every module: Linux only (it reads /proc and /sys).
    DOCUMENTATION = r'''
attributes:
  platform:
    support: full
    platforms: posix
    description: Linux only.
'''

    # The read-only modules (*_info): check mode is the same run, there is nothing to diff.
    INFO = r'''
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode returns the same result.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
'''
