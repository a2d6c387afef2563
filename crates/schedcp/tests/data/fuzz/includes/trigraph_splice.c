??=include <a.h>
#inc\
lude <b.h>
/* #include <c.h> */ #include <d.h>
