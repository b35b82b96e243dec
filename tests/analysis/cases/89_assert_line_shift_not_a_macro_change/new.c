#include <assert.h>
int first(int x)
{
    if (x < 0)
        return x;
    return x;
}
int second(int *p)
{
    assert(p != 0);
    return *p;
}
