#include <errno.h>
#include <ctype.h>
int digit(int c)
{
    if (!isdigit(c))
        return -1;
    return c - '0';
}
