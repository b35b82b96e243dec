/* The new leaf: the same value for x >= 0, but a loop with several live values. */
int leaf_v2(int x)
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
