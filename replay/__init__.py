"""Replay on simulated boards: the QEMU runner, scenarios and verdicts."""
