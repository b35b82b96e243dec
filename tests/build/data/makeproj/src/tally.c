/* Built by a plain Makefile: TALLY_WEIGHT only exists on the compile command line, so the
 * patch cannot be compiled without the program's own flags. */
#include <string.h>
#include "tally.h"

static int total;

int __attribute__((noinline)) tally_add(const char *word)
{
    total += (int)strlen(word) * TALLY_WEIGHT;
    return total;
}

int tally_total(void)
{
    return total;
}
