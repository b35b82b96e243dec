/* Test-only stand-in for the runtime, so build tests can run patched code without ptrace:
 * LD_PRELOADed into the target, its constructor dlopen()s patch.so, fills the pointer slots
 * and writes an absolute jump at each old function's entry, before main runs.
 *   OPUS_SO=/path/patch.so
 *   OPUS_SLOTS=slot_off:target_vaddr,...   (hex; slot offset in patch.so, link-time address)
 *   OPUS_JUMPS=target_vaddr:new_off,...    (hex; old function, new function offset)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uintptr_t exe_bias;
static int first = 1;

static int find_exe(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    if (first) {
        exe_bias = info->dlpi_addr;
        first = 0;
    }
    return 0;
}

static void die(const char *what)
{
    fprintf(stderr, "opus_preload: %s\n", what);
    _exit(99);
}

__attribute__((constructor)) static void opus_apply(void)
{
    const char *so = getenv("OPUS_SO");
    if (!so)
        return;
    dl_iterate_phdr(find_exe, NULL);
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        die(dlerror());
    struct link_map *lm;
    if (dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0)
        die("dlinfo");
    uintptr_t base = lm->l_addr;
    char *slots = strdup(getenv("OPUS_SLOTS") ? getenv("OPUS_SLOTS") : "");
    for (char *tok = strtok(slots, ","); tok; tok = strtok(NULL, ",")) {
        unsigned long off, addr;
        if (sscanf(tok, "%lx:%lx", &off, &addr) != 2)
            die("bad OPUS_SLOTS");
        *(uintptr_t *)(base + off) = exe_bias + addr;
    }
    char *jumps = strdup(getenv("OPUS_JUMPS") ? getenv("OPUS_JUMPS") : "");
    long page = sysconf(_SC_PAGESIZE);
    for (char *tok = strtok(jumps, ","); tok; tok = strtok(NULL, ",")) {
        unsigned long old, off;
        if (sscanf(tok, "%lx:%lx", &old, &off) != 2)
            die("bad OPUS_JUMPS");
        unsigned char *p = (unsigned char *)(exe_bias + old);
        uintptr_t start = (uintptr_t)p & ~(uintptr_t)(page - 1);
        if (mprotect((void *)start, 2 * page, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
            die("mprotect");
        uint64_t dest = base + off;
        p[0] = 0x48; p[1] = 0xb8;            /* movabs $dest, %rax */
        memcpy(p + 2, &dest, 8);
        p[10] = 0xff; p[11] = 0xe0;          /* jmp *%rax */
        mprotect((void *)start, 2 * page, PROT_READ | PROT_EXEC);
    }
}
