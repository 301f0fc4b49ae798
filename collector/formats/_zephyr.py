"""Zephyr facts shared by the fatal-error log and the coredump adapters.

Reason codes: ``enum k_fatal_error_reason`` (include/zephyr/fatal_types.h,
``K_ERR_ARCH_START = 16``) and ``enum k_fatal_error_reason_arch``
(include/zephyr/arch/arm/arch.h, Zephyr 3.5 and later: Cortex-M faults report
a specific reason instead of ``K_ERR_CPU_EXCEPTION``).  The reason text is
``reason_to_str()`` in kernel/fatal.c, which knows only the first five and
prints "Unknown error" for the ARM codes.
"""

from __future__ import annotations

K_ERR_ARCH_START = 16

REASONS: dict[int, tuple[str, str]] = {
    0: ("K_ERR_CPU_EXCEPTION", "CPU exception"),
    1: ("K_ERR_SPURIOUS_IRQ", "Unhandled interrupt"),
    2: ("K_ERR_STACK_CHK_FAIL", "Stack overflow"),
    3: ("K_ERR_KERNEL_OOPS", "Kernel oops"),
    4: ("K_ERR_KERNEL_PANIC", "Kernel panic"),
}

_ARCH_REASONS = (
    ("K_ERR_ARM_MEM_GENERIC", "MemManage"),
    ("K_ERR_ARM_MEM_STACKING", "MemManage"),
    ("K_ERR_ARM_MEM_UNSTACKING", "MemManage"),
    ("K_ERR_ARM_MEM_DATA_ACCESS", "MemManage"),
    ("K_ERR_ARM_MEM_INSTRUCTION_ACCESS", "MemManage"),
    ("K_ERR_ARM_MEM_FP_LAZY_STATE_PRESERVATION", "MemManage"),
    ("K_ERR_ARM_BUS_GENERIC", "BusFault"),
    ("K_ERR_ARM_BUS_STACKING", "BusFault"),
    ("K_ERR_ARM_BUS_UNSTACKING", "BusFault"),
    ("K_ERR_ARM_BUS_PRECISE_DATA_BUS", "BusFault"),
    ("K_ERR_ARM_BUS_IMPRECISE_DATA_BUS", "BusFault"),
    ("K_ERR_ARM_BUS_INSTRUCTION_BUS", "BusFault"),
    ("K_ERR_ARM_BUS_FP_LAZY_STATE_PRESERVATION", "BusFault"),
    ("K_ERR_ARM_USAGE_GENERIC", "UsageFault"),
    ("K_ERR_ARM_USAGE_DIV_0", "UsageFault"),
    ("K_ERR_ARM_USAGE_UNALIGNED_ACCESS", "UsageFault"),
    ("K_ERR_ARM_USAGE_STACK_OVERFLOW", "UsageFault"),
    ("K_ERR_ARM_USAGE_NO_COPROCESSOR", "UsageFault"),
    ("K_ERR_ARM_USAGE_ILLEGAL_EXC_RETURN", "UsageFault"),
    ("K_ERR_ARM_USAGE_ILLEGAL_EPSR", "UsageFault"),
    ("K_ERR_ARM_USAGE_UNDEFINED_INSTRUCTION", "UsageFault"),
    ("K_ERR_ARM_SECURE_GENERIC", "SecureFault"),
    ("K_ERR_ARM_SECURE_ENTRY_POINT", "SecureFault"),
    ("K_ERR_ARM_SECURE_INTEGRITY_SIGNATURE", "SecureFault"),
    ("K_ERR_ARM_SECURE_EXCEPTION_RETURN", "SecureFault"),
    ("K_ERR_ARM_SECURE_ATTRIBUTION_UNIT", "SecureFault"),
    ("K_ERR_ARM_SECURE_TRANSITION", "SecureFault"),
    ("K_ERR_ARM_SECURE_LAZY_STATE_PRESERVATION", "SecureFault"),
    ("K_ERR_ARM_SECURE_LAZY_STATE_ERROR", "SecureFault"),
)

# The Cortex-M exception each fault header of arch/arm/core/cortex_m/fault.c stands for.
HEADER_FAULTS = {
    "MPU FAULT": "MemManage",
    "BUS FAULT": "BusFault",
    "USAGE FAULT": "UsageFault",
    "HARD FAULT": "HardFault",
    "SECURE FAULT": "SecureFault",
    "Debug monitor exception": "DebugMonitor",
    "Debug monitor exception (not implemented)": "DebugMonitor",
}


def reason_name(reason: int) -> str | None:
    """``K_ERR_*`` name of a Zephyr fatal error reason, None when unknown."""
    if reason in REASONS:
        return REASONS[reason][0]
    index = reason - K_ERR_ARCH_START
    if 0 <= index < len(_ARCH_REASONS):
        return _ARCH_REASONS[index][0]
    return None


def reason_fault(reason: int) -> str | None:
    """The Cortex-M fault an ARM-specific reason code names ("BusFault"), else None."""
    index = reason - K_ERR_ARCH_START
    if 0 <= index < len(_ARCH_REASONS):
        return _ARCH_REASONS[index][1]
    return None


def reason_code(name: str) -> int | None:
    """Inverse of :func:`reason_name`."""
    for code, (known, _) in REASONS.items():
        if known == name:
            return code
    for index, (known, _) in enumerate(_ARCH_REASONS):
        if known == name:
            return K_ERR_ARCH_START + index
    return None
