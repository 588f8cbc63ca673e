/* What the Cortex-M4 test firmware's start-up (startup.c) offers main. */
#ifndef LUTQ_MCU_H
#define LUTQ_MCU_H

#include <stdint.h>

/* Writes a NUL-terminated string to the host (semihosting). */
void mcu_print(const char *s);
/* Ends the program; QEMU exits with `code`. */
void mcu_exit(int code);
/* SysTick ticks since reset: one tick per 40 instructions under `-icount shift=0`. */
uint64_t mcu_ticks(void);

#endif
