// Exits from old code, per thread, for the per-thread apply (runtime/perthread.py).
//
// Once new calls go to the new function, a thread holding an old activation can only leave
// it: through a `ret`, a tail-call `jmp` out of the function, or an indirect `jmp`. on_exit is
// attached as a plain uprobe at each of those instructions of the old functions (never at an
// entry, where the trap byte lives; no uretprobe, whose trampoline would hide return addresses
// from the stack check). A change in a thread's count is when to look at that thread again;
// the stack check decides. Only old activations hit these probes: new calls never run old code.
#include <uapi/linux/ptrace.h>

BPF_HASH(exits, u32, u64, 65536);

int on_exit(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 zero = 0;
    u64 *n = exits.lookup_or_try_init(&tid, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
