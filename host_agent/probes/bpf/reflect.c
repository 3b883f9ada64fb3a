// SPDX-License-Identifier: GPL-2.0
/* The probe echo in the kernel: a tc clsact ingress program on the host's data
 * interface (loaded by host_agent/probes/kreflect.py).
 *
 * A probe (UDP 8001 -> 8001, magic 0xA7, type 1: host_agent/probes/worker.py)
 * is turned into its echo where it arrives: type 2, dwell 0, `received` = the
 * count of probes of that (sender, slot) so far, MAC, IP addresses swapped (the
 * IP checksum is unchanged by a swap; the UDP checksum is cleared, which IPv4
 * allows), and sent back out of the same interface. The echo leaves in the same
 * softirq, as the kernel's own ICMP echo reply does: no process has to be
 * scheduled at the reflector, so the RTT is the network's (the user-space
 * reflector is the fallback). Every other packet gets TC_ACT_UNSPEC: the next
 * tc filter (e.g. the eBPF capture's) still sees it.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define PROBE_PORT 8001
#define MAGIC 0xA7
#define PROBE 1
#define ECHO 2
#define UDP_PROTO 17

struct probe_hdr {
	__u8 magic, type;
	__u16 slot;
	__u32 seq, dwell_ns, received;
};

struct session { __u32 saddr; __u32 slot; };

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 100000);
	__type(key, struct session);
	__type(value, __u32);
} probe_received SEC(".maps");

/* echoes sent: [0] packets, [1] IP bytes (the probe cost the worker reports) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} probe_echoed SEC(".maps");

SEC("tc")
int probe_reflect(struct __sk_buff *skb)
{
	const __u32 need = sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr)
		+ sizeof(struct probe_hdr);
	if (skb->len < need)
		return TC_ACT_UNSPEC;
	if ((long)skb->data_end - (long)skb->data < need)
		bpf_skb_pull_data(skb, need);  /* the headers may sit in paged data */
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != UDP_PROTO
	    || (ip->frag_off & bpf_htons(0x3FFF)))
		return TC_ACT_UNSPEC;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end || udp->dest != bpf_htons(PROBE_PORT)
	    || udp->source != bpf_htons(PROBE_PORT))
		return TC_ACT_UNSPEC;
	struct probe_hdr *h = (void *)(udp + 1);
	if ((void *)(h + 1) > end || h->magic != MAGIC || h->type != PROBE)
		return TC_ACT_UNSPEC;
	struct session key = { .saddr = ip->saddr, .slot = h->slot };
	__u32 one = 1, count = 1, *seen = bpf_map_lookup_elem(&probe_received, &key);
	if (seen)
		count = __sync_fetch_and_add(seen, 1) + 1;
	else
		bpf_map_update_elem(&probe_received, &key, &one, BPF_ANY);
	h->type = ECHO;
	h->dwell_ns = 0;
	h->received = bpf_htonl(count);
	udp->check = 0;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__u32 addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	__u32 k0 = 0, k1 = 1;
	__u64 *packets = bpf_map_lookup_elem(&probe_echoed, &k0);
	__u64 *bytes = bpf_map_lookup_elem(&probe_echoed, &k1);
	if (packets && bytes) {
		__sync_fetch_and_add(packets, 1);
		__sync_fetch_and_add(bytes, (__u64)bpf_ntohs(ip->tot_len));
	}
	return bpf_redirect(skb->ifindex, 0);
}

char _license[] SEC("license") = "GPL";
