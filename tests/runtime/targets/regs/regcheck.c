/* Kept in its own file: explicit register variables and inline asm are GNU C that the patch
 * front end need not parse, since the patch only touches regs.c. */
#include <sys/syscall.h>
#include <time.h>

/* One raw nanosleep with known values live in callee-saved registers and rbx across it:
 * returns a bit mask of the registers that did not come back exactly (0 when all did). */
unsigned long regcheck_round(unsigned long round, long *ret_out)
{
    unsigned long bad = 0;
    struct timespec ts = {0, 20 * 1000 * 1000};
    register unsigned long r12 asm("r12") = 0x1212121212121212UL ^ round;
    register unsigned long r13 asm("r13") = 0x1313131313131313UL ^ round;
    register unsigned long r14 asm("r14") = 0x1414141414141414UL ^ round;
    register unsigned long r15 asm("r15") = 0x1515151515151515UL ^ round;
    unsigned long rbx_in = 0xb0b0b0b0b0b0b0b0UL ^ round, rbx_out;
    long ret;
    asm volatile("mov %[bx], %%rbx\n\t"
                 "syscall\n\t"
                 "mov %%rbx, %[bo]\n\t"
                 : "=a"(ret), [bo] "=r"(rbx_out), "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15)
                 : "0"((long)SYS_nanosleep), "D"(&ts), "S"(0), [bx] "r"(rbx_in)
                 : "rcx", "r11", "rbx", "memory", "cc");
    if (r12 != (0x1212121212121212UL ^ round)) bad |= 2;
    if (r13 != (0x1313131313131313UL ^ round)) bad |= 4;
    if (r14 != (0x1414141414141414UL ^ round)) bad |= 8;
    if (r15 != (0x1515151515151515UL ^ round)) bad |= 16;
    if (rbx_out != rbx_in) bad |= 32;
    *ret_out = ret;
    return bad | (ret != 0);
}
