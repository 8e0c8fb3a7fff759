"""Shared test helpers: the float64 references and the tools every test folder uses.

Imported as ``from helpers.<module> import ...`` (tests/conftest.py puts tests/ on
``sys.path``). A reference implementation never imports pseudosel (csl_reference,
adaptive_reference, precision_reference); the others may.

- ``csl_reference``, ``adaptive_reference``, ``precision_reference``: literal float64
  references written from the papers and the published code (numpy, scipy).
- ``probability_maps``: realistic inputs (smooth segmentation-like maps, classifier outputs).
- ``sequences``: multi-step input sequences and numpy views for the reference tests.
- ``tolerances``: the dtypes and the one table of per-dtype tolerances.
- ``selector_zoo``: every registered selector behind one calling convention.
- ``ddp_scenarios``: the two-process gloo scenarios. ``host_sync_guard``: makes host reads
  raise. ``usb_support``: semilearn's import environment and a CPU rig.
"""
