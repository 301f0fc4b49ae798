/*
 * crashcart virtual-clock plugin for QEMU 7.2 (TCG plugin API version 1).
 *
 * The simulated board runs with -icount shift=N, so every executed guest
 * instruction advances virtual time by 2^N ns.  QEMU has no command-line
 * option to stop a machine at a virtual instant; this plugin provides one.
 * It counts executed instructions per translation block and, when the
 * budget given as "limit=<instructions>" is used up, writes its report and
 * ends QEMU with exit status 125.  On any other exit it writes the same
 * report from its atexit callback, so the runner always learns how many
 * instructions (hence how much virtual time) the run took.
 *
 * Report file ("out=<path>"), one line:  "<reason> <instructions>\n"
 * where reason is "limit" or "exit".
 *
 * The declarations below are the subset of include/qemu/qemu-plugin.h that
 * this plugin uses, written out here because Debian does not package the
 * header.  They match QEMU_PLUGIN_VERSION 1 (QEMU 5.2 .. 7.2).
 *
 * SysTick time (replay's `at: {time: T}` stimulus trigger).  If the file
 * "systick-trigger" exists next to the report file when the first block is
 * translated, it names the SysTick handler (word 15 of the vector table) and
 * the clocks:  "v1 <handler> <cpu_hz> <ref_hz> <armed> <target_ns>\n".
 * At every entry to that handler the plugin adds one SysTick period,
 * (SYST_RVR + 1) / f, to the elapsed SysTick time (f = cpu_hz when
 * SYST_CSR.CLKSOURCE is 1, else ref_hz).  SYST_RVR is read at every entry;
 * SYST_CSR only at the first one and when SYST_RVR changed, because reading
 * it clears COUNTFLAG (ARMv7-M ARM B3.3.3).  The trigger file is read again
 * at every entry (the driver rewrites it only while the VM is stopped); when
 * it is armed and the elapsed time has reached target_ns, the plugin stops
 * the VM before the handler's first instruction, as a gdbstub breakpoint
 * would (stop reply T05) but without the icount warp a breakpoint stop
 * causes (see stop_vm_here), and writes
 * "fired <n> <entries> <elapsed_ns> <rvr> <csr>\n" to "systick-report".
 * A plugin cannot pause the VM through its API, so this calls functions
 * Debian's qemu-system-arm exports (looked up with dlsym; "error symbols" in
 * the report when they are missing).  The block's instructions were already
 * counted by icount when the plugin runs, so the stop adds their number (a
 * few) of instructions, 32 ns each at shift 5, to QEMU's virtual clock.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;

typedef struct qemu_info_t {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;

struct qemu_plugin_tb;

enum qemu_plugin_cb_flags {
    QEMU_PLUGIN_CB_NO_REGS,
    QEMU_PLUGIN_CB_R_REGS,
    QEMU_PLUGIN_CB_RW_REGS,
};

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index,
                                            void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id,
                                               struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb,
                                          qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags,
                                          void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id,
                                    qemu_plugin_udata_cb_t cb,
                                    void *userdata);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define LIMIT_EXIT_STATUS 125

static uint64_t executed;
static uint64_t limit;      /* 0: no limit */
static char out_path[4096];
static int reported;

static void write_report(const char *reason)
{
    char line[64];
    int fd, n;

    if (reported || out_path[0] == '\0') {
        return;
    }
    reported = 1;
    n = snprintf(line, sizeof(line), "%s %" PRIu64 "\n", reason, executed);
    fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) != n) {
            /* nothing more we can do from inside QEMU */
        }
        close(fd);
    }
}

/* ---- SysTick time ------------------------------------------------------ */

#define SYST_CSR 0xE000E010u
#define SYST_RVR 0xE000E014u
#define CSR_CLKSOURCE (1u << 2)
#define FS_PER_NS 1000000u
#define STOP_WAIT_POLLS 200000L   /* 10 s of 50 us; the main loop answers in microseconds */

static char trigger_path[4096];
static char systick_report_path[4096];
static int trigger_loaded;          /* trigger file looked for */
static int systick_on;              /* a handler address is known */
static uint64_t systick_handler;
static uint64_t systick_entries;
static unsigned __int128 elapsed_fs;
static uint32_t last_rvr;
static uint32_t last_csr;
static uint64_t fire_count;
static int resuming;                /* the stopped entry's block runs again */

typedef void *(*get_cpu_fn)(int);
typedef int (*rw_debug_fn)(void *, uint32_t, void *, uint32_t, bool);
typedef void (*void_fn)(void);
typedef void (*loop_exit_fn)(void *);
typedef bool (*running_fn)(void);

struct trigger {
    uint64_t handler, cpu_hz, ref_hz, armed, target_ns;
};

static int read_trigger(struct trigger *t)
{
    char buf[256];
    unsigned long long h, c, r, a, n;
    FILE *f = fopen(trigger_path, "r");
    int ok;

    if (f == NULL) {
        return 0;
    }
    ok = fgets(buf, sizeof(buf), f) != NULL
         && sscanf(buf, "v1 %llx %llu %llu %llu %llu", &h, &c, &r, &a, &n) == 5;
    fclose(f);
    if (!ok) {
        return 0;
    }
    t->handler = h;
    t->cpu_hz = c;
    t->ref_hz = r;
    t->armed = a;
    t->target_ns = n;
    return 1;
}

static void write_systick_report(const char *line)
{
    int fd = open(systick_report_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    if (fd >= 0) {
        if (write(fd, line, strlen(line)) < 0) {
            /* nothing more we can do from inside QEMU */
        }
        close(fd);
    }
}

/* Stop the VM before the current block runs, as a gdbstub breakpoint does,
 * but without moving the virtual clock.  A breakpoint stops the vCPU first;
 * the main loop then finds every vCPU idle while the VM still counts as
 * running and warps QEMU_CLOCK_VIRTUAL to its next timer deadline (icount
 * with sleep=off) before it stops the VM.  Here the vCPU asks the main loop
 * for a debug stop and waits, busy in this callback (so not idle), until
 * the VM no longer runs; only then does it leave the block.  So the VM
 * stops with the clock where it was, and the gdbstub reports T05. */
static int stop_vm_here(void *cpu, uint64_t n_insns)
{
    void_fn debug_request = (void_fn)dlsym(RTLD_DEFAULT, "qemu_system_debug_request");
    void_fn stop_current = (void_fn)dlsym(RTLD_DEFAULT, "cpu_stop_current");
    loop_exit_fn loop_exit = (loop_exit_fn)dlsym(RTLD_DEFAULT, "cpu_loop_exit");
    running_fn is_running = (running_fn)dlsym(RTLD_DEFAULT, "runstate_is_running");
    struct timespec pause = {0, 50000};
    long polls = 0;

    if (debug_request == NULL || stop_current == NULL || loop_exit == NULL
        || is_running == NULL) {
        write_systick_report("error symbols\n");
        return 0;
    }
    debug_request();
    while (is_running() && polls < STOP_WAIT_POLLS) {
        nanosleep(&pause, NULL);
        polls++;
    }
    executed -= n_insns;    /* the block runs again after the stop */
    resuming = 1;
    stop_current();
    loop_exit(cpu);         /* does not return */
    return 1;
}

static void systick_entry(unsigned int vcpu_index, void *userdata)
{
    get_cpu_fn get_cpu = (get_cpu_fn)dlsym(RTLD_DEFAULT, "qemu_get_cpu");
    rw_debug_fn rw_debug = (rw_debug_fn)dlsym(RTLD_DEFAULT, "cpu_memory_rw_debug");
    struct trigger t;
    uint32_t rvr = 0, csr = 0;
    uint64_t hz;
    void *cpu;
    char line[160];

    (void)vcpu_index;
    if (resuming) {         /* the entry the VM stopped at: counted already */
        resuming = 0;
        return;
    }
    if (get_cpu == NULL || rw_debug == NULL) {
        write_systick_report("error symbols\n");
        systick_on = 0;
        return;
    }
    cpu = get_cpu(0);
    if (!read_trigger(&t) || cpu == NULL) {
        return;
    }
    if (rw_debug(cpu, SYST_RVR, &rvr, 4, false) != 0) {
        return;
    }
    if (systick_entries == 0 || rvr != last_rvr) {
        if (rw_debug(cpu, SYST_CSR, &csr, 4, false) != 0) {
            return;
        }
        last_csr = csr;
    }
    last_rvr = rvr;
    systick_entries++;
    hz = (last_csr & CSR_CLKSOURCE) ? t.cpu_hz : t.ref_hz;
    if (hz == 0) {
        snprintf(line, sizeof(line), "error clksource %" PRIu64 " 0x%08x 0x%08x\n",
                 systick_entries, rvr, last_csr);
        write_systick_report(line);
        stop_vm_here(cpu, (uint64_t)(uintptr_t)userdata);
        return;
    }
    elapsed_fs += (unsigned __int128)(rvr + 1u) * 1000000000000000ull / hz;
    if (t.armed && elapsed_fs >= (unsigned __int128)t.target_ns * FS_PER_NS) {
        fire_count++;
        snprintf(line, sizeof(line), "fired %" PRIu64 " %" PRIu64 " %" PRIu64 " 0x%08x 0x%08x\n",
                 fire_count, systick_entries, (uint64_t)(elapsed_fs / FS_PER_NS), rvr,
                 last_csr);
        write_systick_report(line);
        stop_vm_here(cpu, (uint64_t)(uintptr_t)userdata);
    }
}

static void load_trigger(void)
{
    struct trigger t;

    trigger_loaded = 1;
    if (read_trigger(&t)) {
        systick_handler = t.handler & ~(uint64_t)1;
        systick_on = 1;
    }
}

static void tb_exec(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    executed += (uint64_t)(uintptr_t)userdata;
    if (limit != 0 && executed >= limit) {
        write_report("limit");
        _exit(LIMIT_EXIT_STATUS);
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);

    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)n);
    if (!trigger_loaded && trigger_path[0] != '\0') {
        load_trigger();
    }
    if (systick_on && qemu_plugin_tb_vaddr(tb) == systick_handler) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, systick_entry, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)n);
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    write_report("exit");
}

static void set_sibling_paths(void)
{
    const char *slash = strrchr(out_path, '/');
    int dir_len = slash == NULL ? 0 : (int)(slash - out_path + 1);

    snprintf(trigger_path, sizeof(trigger_path), "%.*ssystick-trigger", dir_len, out_path);
    snprintf(systick_report_path, sizeof(systick_report_path), "%.*ssystick-report",
             dir_len, out_path);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    int i;

    (void)info;
    for (i = 0; i < argc; i++) {
        if (strncmp(argv[i], "limit=", 6) == 0) {
            limit = strtoull(argv[i] + 6, NULL, 10);
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            strncpy(out_path, argv[i] + 4, sizeof(out_path) - 1);
            set_sibling_paths();
        } else {
            fprintf(stderr, "crashcart vclock plugin: unknown argument %s\n",
                    argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
