// Loaded by opus_bpf/agent/execwatch.py with BCC: BPF(src_file=...).
//
// 1. exec watch: every successful execve on the host sends the new process's pid to user space,
//    so the agent can patch a restarted service as soon as it starts (instead of at the next
//    periodic scan). Filtering by build-id happens in user space (cached by inode), because the
//    set of binaries worth patching is only known there.
// 2. call counter (optional, attached only when the agent runs with --count-calls): a uprobe on
//    the *new* entry of a patched function counts calls per (tgid, address). Each hit is a trap
//    (~0.3 us), which is why it is off by default.

#include <uapi/linux/ptrace.h>
#include <linux/sched.h>

struct exec_event {
    u32 pid;
    u32 old_pid;
    char comm[TASK_COMM_LEN];
};

BPF_PERF_OUTPUT(exec_events);

TRACEPOINT_PROBE(sched, sched_process_exec) {
    struct exec_event ev = {};
    // Only tracepoint fields and helpers: the kernel headers BCC compiles against may come from
    // another kernel version (see scripts/dev.sh), so task_struct offsets are not trusted.
    ev.pid = bpf_get_current_pid_tgid() >> 32;
    ev.old_pid = args->old_pid;
    bpf_get_current_comm(&ev.comm, sizeof(ev.comm));
    exec_events.perf_submit(args, &ev, sizeof(ev));
    return 0;
}

struct call_key {
    u32 tgid;
    u32 pad;
    u64 ip;
};

BPF_HASH(patched_calls, struct call_key, u64, 4096);

int count_call(struct pt_regs *ctx) {
    struct call_key key = {};
    key.tgid = bpf_get_current_pid_tgid() >> 32;
    key.ip = PT_REGS_IP(ctx);
    u64 zero = 0;
    u64 *val = patched_calls.lookup_or_try_init(&key, &zero);
    if (val)
        __sync_fetch_and_add(val, 1);
    return 0;
}
