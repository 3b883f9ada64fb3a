// SPDX-License-Identifier: GPL-2.0
/* tc clsact programs of `capture: ebpf` (loaded by host_agent/capture/ebpf.py).
 *
 * ehm_ingress runs for INPUT sketches, ehm_egress for OUTPUT sketches, on the
 * host's data interface. Per packet: parse IPv4 (options, first fragments
 * only for ports) or IPv6 (extension headers 0, 43, 44, 51, 60, at most 6,
 * within the first 128 bytes of the IP header: the rules of
 * measure_model/packet/headers.py), then for every active sketch slot of
 * this direction evaluate its filter (for a port_scan sketch: connection
 * attempts only) and sampling, mask the record key to
 * the fields its counters need, and add (packets, IP bytes, TCP flags OR) to
 * the slot's active per-CPU hash. User space swaps the active buffer (a field of
 * the slot's config row) and drains the other one with a batch lookup-and-delete.
 *
 * Every path returns TC_ACT_OK: the program never drops or changes a packet.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0
#define MAX_SLOTS 16
#define ETH_HLEN_ 14
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD
#define COPY_BYTES 128
#define MAX_EXT 6

#define F_SRC 1
#define F_DST 2
#define F_PROTO 4
#define F_SPORT 8
#define F_DPORT 16

#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define SERVICE_PORTS 1024

#ifndef EHM_SOURCE_HASH
#define EHM_SOURCE_HASH "unknown"
#endif

struct cfg {
	__u32 on;         /* 1 when the slot holds a sketch */
	__u32 dir;        /* 0 ingress (INPUT), 1 egress (OUTPUT) */
	__u32 fields;     /* F_* kept in the record key */
	__u32 families;   /* bit 0: IPv4, bit 1: IPv6 */
	__u32 proto;      /* 0: any */
	__u32 sampled;    /* 0: every packet, 1: random, 2: nth */
	__u32 threshold;  /* random: keep when prandom < threshold */
	__u32 every;      /* nth: keep every `every`th packet */
	__u32 probes;     /* 1: connection attempts only (a port_scan sketch) */
	__u16 sport_lo, sport_hi, dport_lo, dport_hi;
	__u32 src_net[4], src_mask[4], dst_net[4], dst_mask[4];
	__u32 active;     /* the buffer (0 or 1) packets go to now */
};

/* the slots in use: `top` = highest slot + 1, and a bit per slot of each direction */
struct meta {
	__u32 top;
	__u32 mask[2];
};

struct rec_key {
	__u8 family;
	__u8 proto;
	__u16 sport;
	__u16 dport;
	__u16 pad;
	__u32 src[4];
	__u32 dst[4];
};

struct rec_val {
	__u64 packets;
	__u64 bytes;
	__u64 flags;
};

struct pkt {
	struct rec_key k;
	__u32 len;
	__u8 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct cfg);
} ehm_cfg SEC(".maps");

/* nth-sampling counters */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} ehm_nth SEC(".maps");

/* packets and bytes of records that did not fit (slot * 2 + buffer) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct rec_val);
} ehm_miss SEC(".maps");

/* 0: packets seen (both directions), 1: not IP, 2: records added */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} ehm_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct meta);
} ehm_meta SEC(".maps");

struct inner {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(struct rec_key));
	__uint(value_size, sizeof(struct rec_val));
};

/* the per-CPU hash of slot * 2 + buffer, created by user space sized to the task */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2 * MAX_SLOTS);
	__type(key, __u32);
	__array(values, struct inner);
} ehm_recs SEC(".maps");

const char ehm_source_hash[] SEC(".rodata") = "EHMSRC:" EHM_SOURCE_HASH;

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&ehm_stats, &idx);

	if (v)
		*v += 1;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u32 caplen = skb->len > ETH_HLEN_ ? skb->len - ETH_HLEN_ : 0;
	__u32 l4 = 0, first = 1;

	if (caplen > COPY_BYTES)
		caplen = COPY_BYTES;
	if (skb->protocol == bpf_htons(ETH_P_IP_)) {
		struct iphdr ip;
		__u32 hlen;

		if (caplen < 20 || bpf_skb_load_bytes(skb, ETH_HLEN_, &ip, 20))
			return -1;
		hlen = ip.ihl * 4;
		if (ip.version != 4 || hlen < 20 || caplen < hlen)
			return -1;
		p->k.family = 4;
		p->k.proto = ip.protocol;
		p->k.src[2] = bpf_htonl(0xffff);
		p->k.src[3] = ip.saddr;
		p->k.dst[2] = bpf_htonl(0xffff);
		p->k.dst[3] = ip.daddr;
		p->len = bpf_ntohs(ip.tot_len);
		first = (bpf_ntohs(ip.frag_off) & 0x1fff) == 0;
		l4 = hlen;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6_)) {
		struct ipv6hdr ip6;
		__u32 off = 40;
		__u8 nh;
		int i;

		if (caplen < 40 || bpf_skb_load_bytes(skb, ETH_HLEN_, &ip6, 40))
			return -1;
		if (ip6.version != 6)
			return -1;
		p->k.family = 6;
		__builtin_memcpy(p->k.src, &ip6.saddr, 16);
		__builtin_memcpy(p->k.dst, &ip6.daddr, 16);
		p->len = 40 + bpf_ntohs(ip6.payload_len);
		nh = ip6.nexthdr;
		for (i = 0; i < MAX_EXT; i++) {
			__u8 ext[4];
			__u32 size;

			if (!(nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60))
				break;
			if (off + 8 > caplen)
				break;
			if (bpf_skb_load_bytes(skb, ETH_HLEN_ + (off & 0xff), ext, 4))
				break;
			if (nh == 44) {
				size = 8;
				if ((((__u32)ext[2] << 8) | ext[3]) >> 3)
					first = 0;
			} else if (nh == 51) {
				size = ((__u32)ext[1] + 2) * 4;
			} else {
				size = ((__u32)ext[1] + 1) * 8;
			}
			nh = ext[0];
			off += size;
		}
		p->k.proto = nh;
		l4 = off;
	} else {
		return -1;
	}
	if ((p->k.proto == 6 || p->k.proto == 17) && first && caplen >= l4 + 4 && l4 < 256) {
		__u16 ports[2];

		if (!bpf_skb_load_bytes(skb, ETH_HLEN_ + l4, ports, 4)) {
			p->k.sport = bpf_ntohs(ports[0]);
			p->k.dport = bpf_ntohs(ports[1]);
		}
	}
	if (p->k.proto == 6 && first && caplen >= l4 + 14 && l4 < 256) {
		__u8 fl;

		if (!bpf_skb_load_bytes(skb, ETH_HLEN_ + l4 + 13, &fl, 1))
			p->flags = fl;
	}
	return 0;
}

static __always_inline int in_prefix(const __u32 *a, const __u32 *net, const __u32 *mask)
{
	return ((a[0] & mask[0]) == net[0]) && ((a[1] & mask[1]) == net[1]) &&
	       ((a[2] & mask[2]) == net[2]) && ((a[3] & mask[3]) == net[3]);
}

/* A connection attempt (measure_model.packet.keys.probe_rows): a TCP SYN without ACK
 * or RST, or a UDP datagram unless it goes from a service port to a client port. */
static __always_inline int is_probe(const struct pkt *p)
{
	if (p->k.proto == 6)
		return (p->flags & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN;
	if (p->k.proto == 17)
		return p->k.sport >= SERVICE_PORTS || p->k.dport < SERVICE_PORTS;
	return 0;
}

static __always_inline void count_slot(__u32 slot, struct pkt *p)
{
	struct cfg *cf;
	struct rec_key k = {};
	struct rec_val *v;
	__u32 idx;
	void *recs;

	cf = bpf_map_lookup_elem(&ehm_cfg, &slot);
	if (!cf || !cf->on)
		return;
	if (!(cf->families & (p->k.family == 4 ? 1 : 2)))
		return;
	if (cf->proto && cf->proto != p->k.proto)
		return;
	if (!in_prefix(p->k.src, cf->src_net, cf->src_mask) ||
	    !in_prefix(p->k.dst, cf->dst_net, cf->dst_mask))
		return;
	if (p->k.sport < cf->sport_lo || p->k.sport > cf->sport_hi ||
	    p->k.dport < cf->dport_lo || p->k.dport > cf->dport_hi)
		return;
	if (cf->probes && !is_probe(p))
		return;
	if (cf->sampled == 1 && bpf_get_prandom_u32() >= cf->threshold)
		return;
	if (cf->sampled == 2) {
		__u64 *n = bpf_map_lookup_elem(&ehm_nth, &slot);

		if (!n || !cf->every || (__sync_fetch_and_add(n, 1) + 1) % cf->every)
			return;
	}
	k.family = p->k.family;
	if (cf->fields & F_PROTO)
		k.proto = p->k.proto;
	if (cf->fields & F_SPORT)
		k.sport = p->k.sport;
	if (cf->fields & F_DPORT)
		k.dport = p->k.dport;
	if (cf->fields & F_SRC)
		__builtin_memcpy(k.src, p->k.src, 16);
	if (cf->fields & F_DST)
		__builtin_memcpy(k.dst, p->k.dst, 16);
	idx = slot * 2 + (cf->active ? 1 : 0);
	recs = bpf_map_lookup_elem(&ehm_recs, &idx);
	if (!recs)
		return;
	v = bpf_map_lookup_elem(recs, &k);
	if (!v) {
		struct rec_val nv = {1, p->len, p->flags};

		if (!bpf_map_update_elem(recs, &k, &nv, BPF_NOEXIST)) {
			bump(2);
			return;
		}
		v = bpf_map_lookup_elem(recs, &k);
		if (!v) {
			struct rec_val *m = bpf_map_lookup_elem(&ehm_miss, &idx);

			if (m) {
				m->packets += 1;
				m->bytes += p->len;
			}
			return;
		}
	}
	v->packets += 1;
	v->bytes += p->len;
	v->flags |= p->flags;
	bump(2);
}

/* Only this direction's slots are visited (a bit each in meta), with a plain
 * bounded loop: no callback per slot, no config row of the other direction
 * touched. Cold (a packet every few ms, as a ping), every cache line and map
 * the program touches shows in the round-trip time. */
static __always_inline int handle(struct __sk_buff *skb, __u32 dir)
{
	struct pkt p = {};
	struct meta *m;
	__u32 zero = 0, mask, i;

	bump(0);
	m = bpf_map_lookup_elem(&ehm_meta, &zero);
	if (!m)
		return TC_ACT_OK;
	mask = m->mask[dir & 1];
	if (!mask)
		return TC_ACT_OK;
	if (parse(skb, &p)) {
		bump(1);
		return TC_ACT_OK;
	}
	for (i = 0; i < MAX_SLOTS; i++) {
		if (!(mask >> i))
			break;
		if (mask & (1u << i))
			count_slot(i, &p);
	}
	return TC_ACT_OK;
}

SEC("tc")
int ehm_ingress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

SEC("tc")
int ehm_egress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

char LICENSE[] SEC("license") = "GPL";
