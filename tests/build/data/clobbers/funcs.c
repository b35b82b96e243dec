/* Functions whose caller-saved register use the clobber tests check (-O2). */
#include <stdio.h>

#define KEEP __attribute__((noinline, noclone))

KEEP int leaf(int x) { return x + 1; }

KEEP int say(int x) { printf("%d\n", x); return x; }

/* a static leaf with several live values: it needs more registers than rax */
KEEP static int busy(int n)
{
	int a = 0, b = 1, c = 2, d = 3;
	for (int i = 0; i < n; i++) {
		a += b * i;
		b ^= c + i;
		c += d;
		d = a - c;
	}
	return a + b + c + d;
}

KEEP int via_static(int x) { return busy(x) * 7 + x; }

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

/* -fipa-ra keeps a and b in xmm0/xmm1 across `call leaf` */
KEEP double scale(double a, double b, int k) { return a * leaf(k) + b; }

int (*volatile hook)(int) = leaf;

KEEP int indirect(int x) { return hook(x) + 1; }

int main(int argc, char **argv)
{
	(void)argv;
	return leaf(argc) + say(argc) + via_static(argc) + dispatch(argc, argc) + indirect(argc) + (int)scale(argc, 2.0, argc);
}
