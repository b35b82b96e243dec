#include <errno.h>
#include <string.h>
int parse_port(const char *s, int *port)
{
    if (!s) {
        errno = EINVAL;
        return -1;
    }
    *port = (int)strlen(s);
    return 0;
}
