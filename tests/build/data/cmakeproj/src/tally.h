#ifndef TALLY_H
#define TALLY_H
int tally_add(const char *word);
int tally_total(void);
#endif
