"""Evidence collection and ELF intelligence.

Layers, bottom up: ELF and DWARF reading (``elf``, ``dwarf_types``), the
firmware's data structures (``device_config``), then capture and decode.
"""
