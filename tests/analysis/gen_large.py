"""Generate a large, realistic-looking C translation unit (for the speed test and benchmark).

Functions share globals, call each other in chains, pass structs through pointers and alias
them through locals, so summaries and points-to sets have real work to do.
"""

from __future__ import annotations

HEADER = """\
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

struct item { int id; int len; char name[32]; struct item *next; };
struct table { struct item *head; int count; pthread_mutex_t lock; };
static struct table g_table;
int g_errors;
static char g_last[128];
"""

FUNC = """\
static int helper_{i}(struct item *it, int n)
{{
    struct item *cur = it;
    int total = 0;
    char buf[64];
    if (!cur)
        return -1;
    while (cur && n-- > 0) {{
        total += cur->len;
        if (cur->len > (int)sizeof(buf))
            return -2;
        memcpy(buf, cur->name, sizeof(cur->name));
        cur = cur->next;
    }}
    if (total > {limit}) {{
        g_errors++;
        snprintf(g_last, sizeof(g_last), "helper_{i}: %d", total);
        return -3;
    }}
    return total;
}}

int process_{i}(struct item *it, int *out)
{{
    int r;
    struct item *p = it;
    pthread_mutex_lock(&g_table.lock);
    r = helper_{i}(p, {n});
    if (r >= 0 && out)
        *out = r + {i};
    if (r < 0)
        g_table.count--;
    else
        p->len = r % 32;
    {call}
    pthread_mutex_unlock(&g_table.lock);
    return r < 0 ? -1 : 0;
}}

"""


def large_tu(lines: int = 10_000) -> str:
    parts = [HEADER]
    i = 0
    while sum(p.count("\n") for p in parts) < lines:
        call = f"if (r > 1000) (void)process_{i - 1}(it, out);" if i else ";"
        parts.append(FUNC.format(i=i, limit=100 + i, n=4 + i % 7, call=call))
        i += 1
    return "".join(parts)


def patched(src: str, which: int = 7) -> str:
    """The security fix: a new bounds check in process_<which> reusing return value -1."""
    needle = f"    r = helper_{which}(p, "
    return src.replace(needle, "    if (!it || it->len < 0)\n        return -1;\n" + needle, 1)
