#include </proc/self/environ>
#define X <a.h>
#include X
