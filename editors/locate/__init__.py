"""Shared locate-and-edit machinery (METHOD.md §4), one module per concept.

tokens   -- where the subject's last token sits in a (padded) batch
hooks    -- read/overwrite FFN keys, FFN outputs and block outputs at positions
prefixes -- seeded random context prefixes, generated once per model
keys     -- k*: FFN input at the last subject token, averaged over prefixes
vstar    -- the target-value (v*/delta) optimisation
stats    -- cached layer second moments C = E[k k^T]
solve    -- the closed-form updates of ROME, MEMIT and AlphaEdit (float64)
"""
