// The busy guest: a multiboot kernel (no OS, no libc) that keeps dirtying a
// fixed amount of its RAM at a chosen rate while QEMU migrates it, and prints
// a counter to the serial port once a second, so that a test can see its loop
// carry on at the destination.
//
// Kernel command line (QEMU -append): "mib=W rate=D"
//   W  MiB of RAM dirtied over and over, from 16 MiB up (RAM: busy_guest_ram_mib())
//   D  MiB/s dirtied: D * 256 pages a second, each gets one 32-bit word written
//      (so it is sent whole; QEMU skips only all-zero pages). 0: no dirtying.
//
// Serial lines (COM1):
//   xmig-busy start mib=W rate=D
//   xmig-busy n=N pages=P stale=S
//     N counts seconds since boot, P pages written so far, S pages found not
//     holding what the guest last wrote there (each page holds the number of
//     the pass that last wrote it, checked before it is written again): a
//     migration that lost a dirty page shows up as S > 0 on the destination
//     once the guest has gone over its buffer again.
//
// Time comes from the HPET's main counter (QEMU's virtual clock, which follows
// the host's while the guest runs and stops while it is paused), so the rate
// does not drift when the host is too busy to deliver every timer tick. The
// PIT's 1 kHz interrupt only wakes the CPU from hlt when there is nothing to
// dirty, so an idle guest leaves the host's CPU alone.
//
// Built 32-bit freestanding (harness/CMakeLists.txt): no 64-bit division, no
// libgcc.
#include <stdint.h>

#define MULTIBOOT_MAGIC 0x1BADB002u
#define MULTIBOOT_INFO_CMDLINE (1u << 2)
#define COM1 0x3F8
#define PAGE_SIZE 4096u
#define PAGES_PER_MIB 256u
#define BUFFER_START (16u << 20)  // above this image (loaded at 1 MiB) and its stack
#define HPET_BASE 0xFED00000u     // QEMU pc's HPET
#define HPET_PERIOD_FS 10000000u  // QEMU's HPET counts every 10 ns
#define HPET_TICKS_PER_SECOND 100000000u
#define HPET_UNIT_SHIFT 10  // rate accounting in units of 1024 ticks (10.24 us)
// Pages per unit in 16.16 fixed point = pages/s * 10.24e-6 * 65536 = pages/s * 0.67108864,
// i.e. (pages/s * 43980) >> 16.
#define PAGES_PER_UNIT_FIXED_MUL 43980u
#define MAX_CATCH_UP_TICKS HPET_TICKS_PER_SECOND  // after a pause, at most 1 s of debt
#define PAGES_PER_STEP 4096u  // then look at the clock again (the report is due)
#define PIT_HZ 1000u
#define PIT_INPUT_HZ 1193182u
#define IRQ_BASE 0x20  // the PICs' vectors, moved off the CPU's exceptions

// --- multiboot header: QEMU's -kernel looks for it in the first 8 KiB -------
__attribute__((section(".multiboot"), used)) static const uint32_t multiboot_header[3] = {
    MULTIBOOT_MAGIC, 0, -(MULTIBOOT_MAGIC + 0)};

struct multiboot_info {
  uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};

// --- port I/O, HPET ----------------------------------------------------------
static inline void outb(uint16_t port, uint8_t v) {
  __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline volatile uint32_t* hpet(uint32_t offset) {
  return (volatile uint32_t*)(HPET_BASE + offset);
}
// The 64-bit main counter from two 32-bit reads, high read again to catch a carry.
static uint64_t hpet_now(void) {
  for (;;) {
    uint32_t hi = *hpet(0xF4), lo = *hpet(0xF0);
    if (*hpet(0xF4) == hi) return ((uint64_t)hi << 32) | lo;
  }
}

// --- serial ------------------------------------------------------------------
static void serial_init(void) {
  outb(COM1 + 1, 0x00);  // no interrupts
  outb(COM1 + 3, 0x80);  // divisor latch
  outb(COM1 + 0, 0x01);  // 115200 baud
  outb(COM1 + 1, 0x00);
  outb(COM1 + 3, 0x03);  // 8N1
}
static void put(char c) {
  while (!(inb(COM1 + 5) & 0x20)) {
  }
  outb(COM1, (uint8_t)c);
}
static void puts_(const char* s) {
  while (*s) put(*s++);
}
static void putu(uint32_t v) {
  char digits[10];
  int n = 0;
  do digits[n++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (n > 0) put(digits[--n]);
}

// --- command line ------------------------------------------------------------
// The number after "key=" in cmdline, or fallback.
static uint32_t param(const char* cmdline, const char* key, uint32_t fallback) {
  for (const char* p = cmdline; p && *p; ++p) {
    const char* k = key;
    const char* q = p;
    while (*k && *q == *k) ++k, ++q;
    if (*k || *q != '=' || (p != cmdline && p[-1] != ' ')) continue;
    uint32_t v = 0;
    for (++q; *q >= '0' && *q <= '9'; ++q) v = v * 10 + (uint32_t)(*q - '0');
    return v;
  }
  return fallback;
}

// --- interrupts: our own GDT and IDT, PICs remapped, PIT at 1 kHz -----------
struct __attribute__((packed)) table_pointer {
  uint16_t limit;
  uint32_t base;
};
struct __attribute__((packed)) idt_gate {
  uint16_t offset_low, selector;
  uint8_t zero, type;
  uint16_t offset_high;
};
static const uint64_t gdt[3] = {0, 0x00CF9A000000FFFFull, 0x00CF92000000FFFFull};
static struct idt_gate idt[IRQ_BASE + 16];

// Timer (IRQ 0) and the other IRQs (spurious 7 and 15 included): acknowledge and
// return; waking the CPU from hlt is all they are for.
void irq_master(void);
void irq_slave(void);
__asm__(
    ".pushsection .text\n"
    "irq_master: push %eax; movb $0x20, %al; outb %al, $0x20; pop %eax; iret\n"
    "irq_slave: push %eax; movb $0x20, %al; outb %al, $0xA0; outb %al, $0x20; pop %eax; iret\n"
    ".popsection\n");

static void set_gate(int vector, void (*handler)(void)) {
  const uint32_t a = (uint32_t)handler;
  idt[vector] = (struct idt_gate){.offset_low = (uint16_t)a,
                                  .selector = 0x08,
                                  .zero = 0,
                                  .type = 0x8E,  // present, ring 0, 32-bit interrupt gate
                                  .offset_high = (uint16_t)(a >> 16)};
}

static void interrupts_init(void) {
  const struct table_pointer g = {.limit = sizeof gdt - 1, .base = (uint32_t)gdt};
  __asm__ volatile(
      "lgdt %0\n"
      "ljmp $0x08, $1f\n"
      "1: movw $0x10, %%ax\n"
      "movw %%ax, %%ds; movw %%ax, %%es; movw %%ax, %%ss; movw %%ax, %%fs; movw %%ax, %%gs\n"
      :
      : "m"(g)
      : "eax", "memory");
  for (int v = 0; v < 8; ++v) set_gate(IRQ_BASE + v, irq_master);
  for (int v = 8; v < 16; ++v) set_gate(IRQ_BASE + v, irq_slave);
  const struct table_pointer i = {.limit = sizeof idt - 1, .base = (uint32_t)idt};
  __asm__ volatile("lidt %0" : : "m"(i));
  // ICW1..4: edge triggered, cascade, vectors IRQ_BASE and IRQ_BASE + 8, 8086 mode.
  outb(0x20, 0x11), outb(0xA0, 0x11);
  outb(0x21, IRQ_BASE), outb(0xA1, IRQ_BASE + 8);
  outb(0x21, 0x04), outb(0xA1, 0x02);
  outb(0x21, 0x01), outb(0xA1, 0x01);
  outb(0x21, 0xFE), outb(0xA1, 0xFF);  // only IRQ 0 (the PIT)
  const uint32_t divisor = PIT_INPUT_HZ / PIT_HZ;
  outb(0x43, 0x34);  // channel 0, lobyte/hibyte, mode 2 (rate generator)
  outb(0x40, (uint8_t)divisor), outb(0x40, (uint8_t)(divisor >> 8));
  __asm__ volatile("sti");
}

// Drops every TLB entry, as a real OS does all the time (context switches, page
// table changes). Without it the stack page would stay in QEMU's TCG TLB with
// its write fast path on, and QEMU 7.2 does not reset that when a migration
// syncs its dirty bitmap: the stack's later writes would never be sent (seen:
// the destination's RAM differed from the paused source's in that one page).
// Paging is off, so toggling CR0.WP (which makes TCG flush) changes nothing else.
static inline void flush_tlb(void) {
  __asm__ volatile(
      "mov %%cr0, %%eax\n"
      "xor $0x10000, %%eax\n"
      "mov %%eax, %%cr0\n"
      "xor $0x10000, %%eax\n"
      "mov %%eax, %%cr0\n"
      :
      :
      : "eax", "memory");
}

// --- the loop ----------------------------------------------------------------
void guest_main(const struct multiboot_info* info) {
  serial_init();
  const char* cmdline =
      (info->flags & MULTIBOOT_INFO_CMDLINE) ? (const char*)info->cmdline : (const char*)0;
  const uint32_t mib = param(cmdline, "mib", 64), rate = param(cmdline, "rate", 0);
  const uint32_t buffer_pages = mib * PAGES_PER_MIB;
  volatile uint32_t* const buffer = (volatile uint32_t*)BUFFER_START;

  puts_("xmig-busy start mib="), putu(mib), puts_(" rate="), putu(rate), puts_("\n");
  const uint32_t hpet_period_fs = *hpet(0x04);  // high half of the capabilities
  if (hpet_period_fs != HPET_PERIOD_FS) {
    puts_("xmig-busy error: no HPET at 10 ns (period fs "), putu(hpet_period_fs), puts_(")\n");
    for (;;) __asm__ volatile("cli; hlt");
  }
  *hpet(0x10) |= 1;  // ENABLE_CNF: the main counter runs
  interrupts_init();

  const uint64_t pages_per_unit = ((uint64_t)rate * PAGES_PER_MIB * PAGES_PER_UNIT_FIXED_MUL) >> 16;
  uint64_t last = hpet_now(), next_report = last + HPET_TICKS_PER_SECOND, budget = 0;
  uint32_t seconds = 0, written = 0, position = 0, pass = 1, stale = 0;
  for (;;) {
    const uint64_t now = hpet_now();
    uint64_t elapsed = now - last;
    if (elapsed > MAX_CATCH_UP_TICKS) elapsed = MAX_CATCH_UP_TICKS, last = now - elapsed;
    const uint64_t units = elapsed >> HPET_UNIT_SHIFT;
    last += units << HPET_UNIT_SHIFT;
    budget += units * pages_per_unit;
    uint32_t pages =
        (uint32_t)(budget >> 16) > PAGES_PER_STEP ? PAGES_PER_STEP : (uint32_t)(budget >> 16);
    budget -= (uint64_t)pages << 16;
    for (uint32_t k = 0; k < pages && buffer_pages > 0; ++k) {
      // Each page holds the number of the last pass that wrote it: anything
      // else means a migration lost a write (the page arrived stale). The
      // first pass finds whatever the firmware left (SeaBIOS uses the top of
      // RAM), so it checks nothing.
      volatile uint32_t* word = &buffer[position * (PAGE_SIZE / 4)];
      if (pass > 1 && *word != pass - 1) ++stale;
      *word = pass;
      if (++position == buffer_pages) position = 0, ++pass;
    }
    written += pages;
    if (now >= next_report) {
      puts_("xmig-busy n="), putu(++seconds), puts_(" pages="), putu(written), puts_(" stale="),
          putu(stale);
      puts_("\n");
      next_report += HPET_TICKS_PER_SECOND;
      if (next_report <= now) next_report = now + HPET_TICKS_PER_SECOND;
    }
    flush_tlb();
    if (pages == 0) __asm__ volatile("hlt");
  }
}

// Entry from the multiboot loader: protected mode, paging off, EBX = the info.
__asm__(
    ".pushsection .text\n"
    ".globl _start\n"
    "_start:\n"
    "  mov $stack_top, %esp\n"
    "  push %ebx\n"
    "  call guest_main\n"
    "1: cli; hlt; jmp 1b\n"
    ".popsection\n"
    ".pushsection .bss\n"
    ".balign 16\n"
    "  .skip 65536\n"
    "stack_top:\n"
    ".popsection\n");
