"""Configuration: main.cf and master.cf, after Postfix (SPEC S10).

Where to look: params.py declares every parameter (type, default, doc);
main_cf.py parses, expands, checks and edits main.cf; master_cf.py parses the
service table; postconf.py is the logic of ``estafeta config``; defaults.py
holds the text of the embedded default instance.
"""
from __future__ import annotations

from .main_cf import MainConfig, check, edit_main_cf
from .master_cf import ServiceEntry, load_master_cf, parse_master_cf
from .params import PARAMS, Param

__all__ = ["PARAMS", "MainConfig", "Param", "ServiceEntry", "check", "edit_main_cf",
           "load_master_cf", "parse_master_cf"]
