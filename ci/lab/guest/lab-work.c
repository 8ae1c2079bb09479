/*
 * lab-work: the workload of the lab's test guests.
 *
 *   lab-work idle
 *   lab-work dirty HOT_MIB SWEEP_MIB SWEEP_MIB_PER_S
 *   lab-work random FILL_MIB
 *
 * Prints "HEARTBEAT n gap_ms=G ..." once a second on stdout (the guest
 * console), where n counts up from 0 for the life of the guest, so the
 * counter carries on across save/restore and migration, and G is the longest
 * stall of the work loop seen in that second, measured on CLOCK_BOOTTIME
 * (which, unlike CLOCK_MONOTONIC, counts the time the kernel spent
 * suspended): a save/restore's or migration's outage shows up as a large G
 * right after it. "ticks=T" counts the work loop's passes since the start
 * and "t_ms=M" is the CLOCK_BOOTTIME ms since the start: each pass does the
 * same work, so ticks over time between two heartbeats is the guest's work
 * rate (what a throttle costs it; a heartbeat can span far more than a
 * second when the loop is starved).
 *
 * dirty: rewrites every page of a hot set each tick (10 ms) -- pages that stay
 * dirty round after round, which a hot-page policy holds back for the final
 * round -- and sweeps a larger region at a slower rate, so that pre-copy
 * rounds have a changing, shrinking-but-never-empty dirty set.
 *
 * random: fills FILL_MIB of memory with pseudo-random bytes (no page is
 * zero or compresses), then idles: a guest whose memory is all data.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096UL

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_BOOTTIME, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Anonymous memory with every page faulted in, so the guest's footprint is
 * fixed from the start (no OOM surprises halfway through a migration). */
static unsigned char *alloc_touched(size_t bytes)
{
    if (bytes == 0)
        return NULL;
    unsigned char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "lab-work: cannot map %zu MiB: %s\n", bytes >> 20, strerror(errno));
        exit(1);
    }
    for (size_t off = 0; off < bytes; off += PAGE)
        p[off] = 1;
    return p;
}

static long arg_mib(const char *s, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 4096) {
        fprintf(stderr, "lab-work: %s: expected MiB 0..4096, got \"%s\"\n", what, s);
        exit(2);
    }
    return v;
}

/* Fills the buffer with xorshift64 output, seeded from the clock. */
static void fill_random(unsigned char *p, size_t bytes)
{
    uint64_t x = (uint64_t)now_ms() * 2654435761u + 1;
    for (size_t off = 0; off + 8 <= bytes; off += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + off, &x, 8);
    }
}

int main(int argc, char **argv)
{
    int dirty;
    long hot_mib = 0, sweep_mib = 0, rate_mib = 0, fill_mib = 0;
    const char *mode = "idle";

    if (argc == 2 && strcmp(argv[1], "idle") == 0) {
        dirty = 0;
    } else if (argc == 3 && strcmp(argv[1], "random") == 0) {
        dirty = 0;
        mode = "random";
        fill_mib = arg_mib(argv[2], "FILL_MIB");
        unsigned char *fill = alloc_touched((size_t)fill_mib << 20);
        if (fill)
            fill_random(fill, (size_t)fill_mib << 20);
    } else if (argc == 5 && strcmp(argv[1], "dirty") == 0) {
        dirty = 1;
        hot_mib = arg_mib(argv[2], "HOT_MIB");
        sweep_mib = arg_mib(argv[3], "SWEEP_MIB");
        rate_mib = arg_mib(argv[4], "SWEEP_MIB_PER_S");
        mode = "dirty";
    } else {
        fprintf(stderr, "usage: lab-work idle | lab-work dirty HOT_MIB SWEEP_MIB SWEEP_MIB_PER_S"
                        " | lab-work random FILL_MIB\n");
        return 2;
    }

    size_t hot_pages = (size_t)hot_mib * 256, sweep_pages = (size_t)sweep_mib * 256;
    /* volatile: the stores are the point, the compiler must not drop them */
    volatile unsigned char *hot = alloc_touched(hot_pages * PAGE);
    volatile unsigned char *sweep = alloc_touched(sweep_pages * PAGE);
    /* idle ticks less often: waking 100 times a second costs a lot under
     * nested emulation and the stall resolution matters less there */
    const long tick_ms = dirty ? 10 : 50;
    const size_t sweep_per_tick = sweep_pages ? (size_t)rate_mib * 256 * tick_ms / 1000 : 0;

    printf("WORKLOAD mode=%s hot=%ldMiB sweep=%ldMiB rate=%ldMiB/s fill=%ldMiB tick=%ldms\n",
           mode, hot_mib, sweep_mib, rate_mib, fill_mib, tick_ms);
    fflush(stdout);

    unsigned long beat = 0, passes = 0, ticks = 0;
    unsigned char gen = 0;
    size_t cursor = 0;
    double last = now_ms(), second_start = last, max_gap = 0, t_start = last;
    struct timespec tick = {0, tick_ms * 1000000L};

    for (;;) {
        if (dirty) {
            gen++;
            for (size_t i = 0; i < hot_pages; i++)
                hot[i * PAGE] = gen;
            for (size_t i = 0; i < sweep_per_tick; i++) {
                sweep[cursor * PAGE + 8] = gen;
                if (++cursor == sweep_pages) {
                    cursor = 0;
                    passes++;
                }
            }
        }
        nanosleep(&tick, NULL);
        ticks++;
        double t = now_ms();
        double gap = t - last - tick_ms;
        if (gap > max_gap)
            max_gap = gap;
        last = t;
        if (t - second_start >= 1000) {
            printf("HEARTBEAT %lu gap_ms=%.0f sweeps=%lu ticks=%lu t_ms=%.0f\n", beat++, max_gap,
                   passes, ticks, t - t_start);
            fflush(stdout);
            second_start = t;
            max_gap = 0;
        }
    }
}
