/* Minimal Cortex-M4 start-up for QEMU's mps2-an386: vector table, .data/.bss set-up,
 * semihosting output and exit, and an instruction counter on SysTick.
 *
 * Instruction counting: QEMU runs with `-icount shift=0,sleep=off`, so virtual time
 * advances 1 ns per instruction; SysTick on the processor clock (25 MHz on MPS2) then
 * ticks once every 40 instructions, identically on every run. SysTick counts down 24
 * bits: its interrupt counts the wraps. */

#include <stdint.h>

#include "lutq_mcu.h"

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end, __stack_top;

int main(void);

void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);

static volatile uint32_t systick_wraps;

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__stack_top),
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    0,
    0,
    0,
    0,
    Default_Handler, /* SVC */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
};

/* One semihosting call (ARM semihosting: BKPT 0xAB, operation in r0, argument in r1). */
static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void mcu_print(const char *s)
{
    semihost(0x04, s); /* SYS_WRITE0 */
}

void mcu_exit(int code)
{
    /* SYS_EXIT_EXTENDED: QEMU exits with `code`. */
    const uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
    semihost(0x20, block);
    for (;;) {
    }
}

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

void SysTick_Handler(void)
{
    ++systick_wraps;
}

#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)

uint64_t mcu_ticks(void)
{
    uint32_t wraps, value, pending;
    /* Re-read if the wrap interrupt ran between the reads. */
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
        pending = SCB_ICSR & ICSR_PENDSTSET;
    } while (wraps != systick_wraps);
    /* The counter reloaded but its interrupt has not run yet: count that wrap. (A
     * pending wrap with a low value means the value was read just before the reload.) */
    if (pending && value > 0x800000u) {
        ++wraps;
    }
    return (uint64_t)wraps * 0x1000000u + (0xFFFFFFu - value);
}

void Default_Handler(void)
{
    mcu_print("lutq-mcu: unexpected exception\n");
    mcu_exit(100);
}

void Reset_Handler(void)
{
    uint32_t *src = &__data_load;
    uint32_t *dst;
    for (dst = &__data_start; dst < &__data_end;) {
        *dst++ = *src++;
    }
    for (dst = &__bss_start; dst < &__bss_end;) {
        *dst++ = 0;
    }
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* enable, interrupt on wrap, processor clock */
    /* Writing CVR cleared it to 0; it reloads (without a wrap) on the first tick. */
    while (SYST_CVR == 0) {
    }
    mcu_exit(main());
}
