/* The -fipa-ra hazard, live: caller() keeps its arguments in caller-saved registers across
 * `call leaf` because gcc saw that leaf only writes rax. main() then redirects leaf to
 * leaf_v2 (same result, more registers) with a `jmp rel32` at its entry, as opus-bpf does,
 * and calls caller() again. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KEEP __attribute__((noinline, noclone))

KEEP int leaf(int x) { return x + 1; }

KEEP int caller(int a, int b, int c, int d)
{
	int x = leaf(a);
	return x * b + c * d + a;
}

int leaf_v2(int x); /* demo_v2.c */

static void redirect(void *from, void *to)
{
	uintptr_t page = (uintptr_t)from & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
	unsigned char jmp[5] = {0xe9};
	int32_t rel = (int32_t)((intptr_t)to - ((intptr_t)from + 5));

	memcpy(jmp + 1, &rel, 4);
	mprotect((void *)page, 2 * sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE | PROT_EXEC);
	memcpy(from, jmp, sizeof(jmp));
	mprotect((void *)page, 2 * sysconf(_SC_PAGESIZE), PROT_READ | PROT_EXEC);
}

int main(void)
{
	int (*volatile call)(int, int, int, int) = caller;

	printf("%d\n", call(3, 5, 7, 11));
	redirect((void *)leaf, (void *)leaf_v2);
	printf("%d\n", call(3, 5, 7, 11));
	return 0;
}
