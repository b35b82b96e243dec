#include <stdio.h>
#include "tally.h"

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        tally_add(argv[i]);
    printf("%s total=%d\n", PROGRAM_NAME, tally_total());
    return 0;
}
