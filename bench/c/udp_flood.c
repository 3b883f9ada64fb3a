/* UDP sender with sendmmsg: saturates the path where a Python sender cannot.
 *
 * udp_flood DST PORT RATE SECONDS NSRC SRC_PREFIX: NSRC sockets bound to
 * SRC_PREFIX.100.. and connected to DST:PORT send 64-byte datagrams in
 * batches of up to 64 per sendmmsg, paced to RATE packets/s (0: as fast as
 * possible) for SECONDS. Prints "sent elapsed_seconds". Built by bench/monitor.py.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: udp_flood DST PORT RATE SECONDS NSRC SRC_PREFIX\n");
        return 2;
    }
    double rate = atof(argv[3]), seconds = atof(argv[4]);
    int nsrc = atoi(argv[5]);
    if (nsrc < 1 || nsrc > 64) return 2;
    int socks[64];
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &dst.sin_addr);
    for (int i = 0; i < nsrc; i++) {
        char src[64];
        snprintf(src, sizeof src, "%s.%d", argv[6], 100 + i);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        inet_pton(AF_INET, src, &sa.sin_addr);
        socks[i] = socket(AF_INET, SOCK_DGRAM, 0);
        int sndbuf = 4 << 20;
        setsockopt(socks[i], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        if (bind(socks[i], (struct sockaddr *)&sa, sizeof sa) ||
            connect(socks[i], (struct sockaddr *)&dst, sizeof dst)) {
            perror(src);
            return 1;
        }
    }
    static char payload[64];
    memset(payload, 'p', sizeof payload);
    struct iovec iov = {.iov_base = payload, .iov_len = sizeof payload};
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) { msgs[i].msg_hdr.msg_iov = &iov; msgs[i].msg_hdr.msg_iovlen = 1; }
    unsigned long long sent = 0, total = rate > 0 ? (unsigned long long)(rate * seconds) : 0;
    double start = now(), t;
    int k = 0;
    while ((t = now() - start) < seconds) {
        unsigned long long due = rate > 0 ? (unsigned long long)(t * rate) + 1 : sent + BATCH;
        if (rate > 0 && due > total) due = total;
        if (due <= sent) {
            if (rate > 0 && sent >= total) break;
            usleep(200);
            continue;
        }
        unsigned int n = due - sent > BATCH ? BATCH : (unsigned int)(due - sent);
        int r = sendmmsg(socks[k++ % nsrc], msgs, n, 0);
        if (r > 0) sent += (unsigned long long)r;
    }
    printf("%llu %.6f\n", sent, now() - start);
    return 0;
}
