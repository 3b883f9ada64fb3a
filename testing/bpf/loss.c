// Random packet loss for tests: a tc (clsact) direct-action program that drops a
// packet when a random 32-bit number is below the threshold in its one-entry array
// map (threshold = p * 2^32). Built at test time by testing/faults.py.
// TC_ACT_STOLEN, not TC_ACT_SHOT: the packet is freed but the send reports success.
// A SHOT drop is an error to the sender; OVS's userspace datapath then gives up the
// rest of its sendmmsg batch, and the loss comes out larger than p.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} loss_threshold SEC(".maps");

SEC("tc")
int random_loss(struct __sk_buff *skb)
{
    __u32 key = 0;
    __u64 *threshold = bpf_map_lookup_elem(&loss_threshold, &key);
    if (threshold && (__u64)bpf_get_prandom_u32() < *threshold)
        return TC_ACT_STOLEN;
    return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
