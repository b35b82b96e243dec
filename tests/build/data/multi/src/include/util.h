#ifndef UTIL_H
#define UTIL_H
#define SCALE 3
extern int total;
int bump(int n);
int util_count(void);
#endif
