/* libcalc.so: a shared library whose function is patched in every process that maps it. */
static unsigned long calls;

__attribute__((noinline)) int calc(int x)
{
    calls++;
    return x + 1;
}

unsigned long calc_calls(void) { return calls; }
