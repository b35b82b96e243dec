// Live activations of the functions being replaced, per thread.
//
// on_entry is attached as a uprobe at each function's entry, on_return as a uretprobe.
// An activation that began before the probes were attached returns without an entry:
// it finds no depth for its thread and is ignored (it is the stack check's job to see it).
// totals[0] = live activations (sum of depths), [1] = entries seen, [2] = returns seen.
#include <uapi/linux/ptrace.h>

BPF_HASH(depth, u32, s64, 65536);
BPF_ARRAY(totals, s64, 3);

static __always_inline void bump(int key, s64 by)
{
    s64 *v = totals.lookup(&key);
    if (v)
        __sync_fetch_and_add(v, by);
}

int on_entry(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    s64 zero = 0;
    s64 *d = depth.lookup_or_try_init(&tid, &zero);
    if (d) {
        __sync_fetch_and_add(d, 1);
        bump(0, 1);
    }
    bump(1, 1);
    return 0;
}

int on_return(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    s64 *d = depth.lookup(&tid);
    bump(2, 1);
    if (!d || *d <= 0)
        return 0;
    __sync_fetch_and_add(d, -1);
    bump(0, -1);
    return 0;
}
