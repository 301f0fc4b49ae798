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
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

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
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    write_report("exit");
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
