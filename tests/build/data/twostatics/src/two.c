/* Two functions with a local static of the same name: calls.0 / calls.1 in the symbol
 * table; only DWARF says which belongs to which function. */
#include <stdio.h>

int __attribute__((noinline)) first(void)
{
    static int calls = 5;
    return ++calls;
}

int __attribute__((noinline)) second(void)
{
    static int calls;
    return ++calls;
}

int main(void)
{
    printf("%d %d\n", first(), second());
    return 0;
}
