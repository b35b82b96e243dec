#include <assert.h>
int first(int x)
{
    return x;
}
int second(int *p)
{
    assert(p != 0);
    return *p;
}
