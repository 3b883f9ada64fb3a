/* Raw Ethernet sender (AF_PACKET, qdisc bypass, sendmmsg): the cheapest way to
 * put packets on a veth from user space, to find the kernel-side ceiling of a
 * tc program on the peer.
 *
 * raw_flood IFNAME DST_MAC SRC_PREFIX DST_IP PORT SECONDS NSRC CPU: frames of
 * a UDP datagram (64-byte payload) from SRC_PREFIX.100..(100+NSRC-1) to
 * DST_IP:PORT, in batches of 256 per sendmmsg, as fast as possible for
 * SECONDS, with this process pinned to CPU (-1: not pinned). Prints "sent
 * elapsed_seconds cpu_seconds": its CPU time includes the receiver's packet path
 * (the veth hands each frame to the peer's softirq on the sending CPU). DST_MAC
 * "otherhost" (02:00:00:00:00:01) makes the receiver drop the frame right
 * after tc ingress (not addressed to it), so the sender and the program are
 * all that run per packet. No checksums are
 * computed (the receiver never reaches UDP in otherhost mode).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 256
#define NFRAMES 64
#define FRAME (14 + 20 + 8 + 64)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned short csum(const void *data, int len) {
    const unsigned short *p = data;
    unsigned long s = 0;
    for (; len > 1; len -= 2) s += *p++;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (unsigned short)~s;
}

int main(int argc, char **argv) {
    if (argc < 9) {
        fprintf(stderr, "usage: raw_flood IFNAME DST_MAC SRC_PREFIX DST_IP PORT SECONDS NSRC CPU\n");
        return 2;
    }
    int nsrc = atoi(argv[7]), cpu = atoi(argv[8]);
    double seconds = atof(argv[6]);
    if (nsrc < 1 || nsrc > NFRAMES) return 2;
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set)) perror("sched_setaffinity");
    }
    unsigned char mac[6] = {0x02, 0, 0, 0, 0, 0x01};
    if (strcmp(argv[2], "otherhost") &&
        sscanf(argv[2], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
               &mac[4], &mac[5]) != 6) {
        fprintf(stderr, "bad MAC %s\n", argv[2]);
        return 2;
    }
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one))
        perror("PACKET_QDISC_BYPASS");
    int sndbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(argv[1]),
                             .sll_halen = 6};
    if (!ll.sll_ifindex) { perror(argv[1]); return 1; }
    memcpy(ll.sll_addr, mac, 6);
    if (bind(fd, (struct sockaddr *)&ll, sizeof ll)) { perror("bind"); return 1; }

    static unsigned char frames[NFRAMES][FRAME];
    for (int i = 0; i < nsrc; i++) {
        unsigned char *f = frames[i];
        memset(f, 'p', FRAME);
        memcpy(f, mac, 6);
        memset(f + 6, 0, 6);
        f[6] = 0x02; f[11] = 0x02;
        f[12] = 0x08; f[13] = 0x00;
        struct iphdr *ip = (struct iphdr *)(f + 14);
        memset(ip, 0, sizeof *ip);
        ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = IPPROTO_UDP;
        ip->tot_len = htons(20 + 8 + 64);
        char src[64];
        snprintf(src, sizeof src, "%s.%d", argv[3], 100 + i);
        inet_pton(AF_INET, src, &ip->saddr);
        inet_pton(AF_INET, argv[4], &ip->daddr);
        ip->check = csum(ip, 20);
        struct udphdr *udp = (struct udphdr *)(f + 34);
        udp->source = htons(40000 + i);
        udp->dest = htons((unsigned short)atoi(argv[5]));
        udp->len = htons(8 + 64);
        udp->check = 0;
    }
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = frames[i % nsrc];
        iov[i].iov_len = FRAME;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long long sent = 0;
    double start = now(), t;
    while ((t = now() - start) < seconds) {
        int r = sendmmsg(fd, msgs, BATCH, 0);
        if (r > 0) sent += (unsigned long long)r;
    }
    double elapsed = now() - start;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%llu %.6f %.6f\n", sent, elapsed,
           ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec));
    return 0;
}
