#include "../../etc/passwd"
