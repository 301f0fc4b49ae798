"""crashcart: collect, decode, lay out and replay Cortex-M crash evidence.

The packages follow the data flow: ``collector`` (capture and ELF
intelligence), ``replay`` (the simulated board and scenarios), ``targets``
(board descriptions as data).  This package holds what they share: the
error tree, YAML loading with line numbers, and the command-line layer.
"""

__version__ = "0.1.0"
