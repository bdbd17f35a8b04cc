"""Sub-commands of ``python -m core``, one module per area."""
