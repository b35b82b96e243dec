/* New versions of funcs.c's functions, built as a patch object would be (-fPIC -shared). */
#include <stdio.h>

#define KEEP __attribute__((noinline, noclone))

#ifdef SAME
KEEP int leaf(int x) { return x + 1; }
#else
/* the fix: same result for x >= 0, but a loop with several live values */
KEEP int leaf(int x)
{
	int a = 0, b = 1, c = 2, d = 3;
	for (int i = 0; i < x; i++) {
		a += b * i;
		b ^= c + i;
		c += d;
		d = a - c;
	}
	return x + 1 + ((a | b | c | d) == 123456789);
}
#endif

/* a fix that goes through floating point writes xmm registers the old leaf never touched */
KEEP int leaf_fp(int x) { return (int)(x * 1.0 + 1.0); }

KEEP int leaf_logs(int x) { printf("leaf %d\n", x); return x + 1; }

KEEP int dispatch(int k, int x)
{
	switch (k) {
	case 0: return x + 11;
	case 1: return x * 13;
	case 2: return x - 17;
	case 3: return x ^ 19;
	case 4: return x << 3;
	case 5: return x / 23;
	case 6: return x % 29;
	default: return 0;
	}
}
