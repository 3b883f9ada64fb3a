/* Accept-only NFQUEUE loop in C (libnetfilter_queue): the kernel path's ceiling.
 *
 * nfq_accept QUEUE [MAXLEN]: binds QUEUE with a 128-byte copy range and
 * fail-open, drains up to 64 queued packets per turn and accepts them with
 * one batch verdict (the Python monitor's design, so the two differ only in
 * the language), and prints the number of packets it has seen on SIGUSR1
 * (one line) and on SIGTERM (then exits). Built and run by bench/monitor.py.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/time.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

static volatile sig_atomic_t report, stop;
static unsigned long long seen;
static uint32_t last_id;

static void on_signal(int sig) { if (sig == SIGUSR1) report = 1; else stop = 1; }

static int cb(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    (void)msg; (void)data;
    (void)qh;
    seen++;
    last_id = ntohl(ph->packet_id);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: nfq_accept QUEUE [MAXLEN]\n"); return 2; }
    struct nfq_handle *h = nfq_open();
    if (!h) { perror("nfq_open"); return 1; }
    struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)atoi(argv[1]), &cb, NULL);
    if (!qh) { perror("nfq_create_queue"); return 1; }
    nfq_set_mode(qh, NFQNL_COPY_PACKET, 128);
    nfq_set_queue_maxlen(qh, argc > 2 ? (uint32_t)atoi(argv[2]) : 4096);
    nfq_set_queue_flags(qh, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN);
    nfnl_rcvbufsiz(nfq_nfnlh(h), 8 << 20);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;            /* no SA_RESTART: recv returns EINTR */
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
    int fd = nfq_fd(h);
    struct timeval tick = {.tv_sec = 0, .tv_usec = 50000};  /* wake up to answer SIGUSR1 */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick);
    static char buf[1 << 16];
    while (!stop) {
        ssize_t n = 0;
        for (int burst = 0; burst < 64; burst++) {
            n = recv(fd, buf, sizeof buf, burst ? MSG_DONTWAIT : 0);
            if (n < 0)
                break;
            nfq_handle_packet(h, buf, (int)n);
        }
        if (last_id) { nfq_set_verdict_batch(qh, last_id, NF_ACCEPT); last_id = 0; }
        if (n < 0 && errno != EINTR && errno != ENOBUFS && errno != EAGAIN && errno != EWOULDBLOCK)
            break;
        if (report) { report = 0; printf("%llu\n", seen); fflush(stdout); }
    }
    printf("%llu\n", seen);
    fflush(stdout);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
