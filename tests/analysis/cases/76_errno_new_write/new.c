#include <errno.h>
#include <ctype.h>
int digit(int c)
{
    if (!isdigit(c)) {
        errno = ERANGE; //! digit:write-global
        return -1;
    }
    return c - '0';
}
