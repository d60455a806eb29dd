"""Shared pytest configuration: offline templates, small thread counts."""

from __future__ import annotations

import os

# Tests run offline: skip the TemplateFlow network attempt and use the bundled fallback.
# Subprocess CLI calls inherit these.
os.environ.setdefault("GENBRAIN_TEMPLATES", "fallback")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
