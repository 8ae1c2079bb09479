/* A process that streams through a large buffer: sweeps a MiB-sized buffer
 * page by page, rewriting each page (memtester-like), for a while.
 * usage: stream MIB START_FILE SECONDS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: stream MIB START_FILE SECONDS\n");
        return 2;
    }
    size_t len = (size_t)atol(argv[1]) << 20;
    double seconds = atof(argv[3]);
    uint64_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(buf, 0x5a, len);
    FILE *f = fopen(argv[2], "w");
    uint64_t t0 = now_ns();
    fprintf(f, "%llu", (unsigned long long)t0);
    fclose(f);
    uint64_t end = t0 + (uint64_t)(seconds * 1e9), pass = 0, pages = 0;
    size_t words = len / 8;
    while (now_ns() < end) {
        for (size_t i = 0; i < words; i += 512) {
            for (size_t j = 0; j < 512; j++)
                buf[i + j] = pass ^ (i + j) * 0x9E3779B97F4A7C15u;
            pages++;
        }
        pass++;
    }
    printf("stream: %llu passes, %llu page writes over %zu MiB in %.0f s\n",
           (unsigned long long)pass, (unsigned long long)pages, len >> 20, seconds);
    return 0;
}
