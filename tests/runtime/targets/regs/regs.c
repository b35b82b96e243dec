/* The main thread (the one opus-bpf injects its system calls into) keeps known values in
 * callee-saved registers across a blocking syscall (regcheck.c) and checks them after: any
 * register not restored exactly, or an interrupted sleep that is not restarted, is reported. */
#include <stdio.h>
#include <unistd.h>

unsigned long regcheck_round(unsigned long round, long *ret_out);

__attribute__((noinline)) int level(void) { return 1; }

int main(void)
{
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (unsigned long round = 1;; round++) {
        long ret;
        unsigned long bad = regcheck_round(round, &ret);
        printf("round=%lu bad=%lu ret=%ld level=%d\n", round, bad, ret, level());
        fflush(stdout);
    }
}
