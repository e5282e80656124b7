"""Bottom-layer helpers shared by fineked/, editors/ and harness/ (no torch at import time)."""
