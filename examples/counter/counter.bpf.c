/* Hash-map counter: a tc classifier that counts packets per IP protocol (6 = TCP, 17 = UDP,
 * 0 = not IPv4) in a BTF-defined BPF_MAP_TYPE_HASH, and bytes in a per-CPU array. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);             /* IP protocol number */
	__type(value, __u64);           /* packets */
} proto_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);           /* bytes seen on this CPU */
} byte_count SEC(".maps");

static __always_inline __u32 ip_proto(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return ip->protocol;
}

SEC("tc")
int count_packets(struct __sk_buff *skb)
{
	__u32 proto = ip_proto(skb), zero = 0;
	__u64 one = 1, *v;

	v = bpf_map_lookup_elem(&proto_count, &proto);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&proto_count, &proto, &one, BPF_NOEXIST);

	v = bpf_map_lookup_elem(&byte_count, &zero);
	if (v)
		*v += skb->len;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual MIT/GPL";
