#ifndef SERVER_H
#define SERVER_H
#define LIMIT 100
int handle(const char *req);
int report(void);
#endif
