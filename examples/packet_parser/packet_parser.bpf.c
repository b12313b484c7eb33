/* XDP packet parser: Ethernet -> IPv4 -> TCP/UDP with a bounds check before every header.
 *
 * Drops packets whose destination port equals `blocked_port` (a .rodata constant you can
 * change before loading: spec.variables["blocked_port"].value = 8080), passes the rest, and
 * remembers the last parsed 5-tuple in `last_flow` and per-verdict counts (all in .bss).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct flow {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
};

const volatile __u16 blocked_port = 0;   /* host byte order; 0 = block nothing */
struct flow last_flow;                  /* .bss */
__u64 passed = 0, dropped = 0, not_ip = 0;

static __always_inline int parse_l4(void *l4, void *data_end, __u8 proto, struct flow *f)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return -1;
		f->sport = bpf_ntohs(tcp->source);
		f->dport = bpf_ntohs(tcp->dest);
		return 0;
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return -1;
		f->sport = bpf_ntohs(udp->source);
		f->dport = bpf_ntohs(udp->dest);
		return 0;
	}
	return -1;
}

SEC("xdp")
int xdp_parse(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct flow f = {};

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		goto other;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		goto other;
	f.saddr = ip->saddr;
	f.daddr = ip->daddr;
	f.proto = ip->protocol;
	if (parse_l4((void *)ip + ip->ihl * 4, data_end, ip->protocol, &f) < 0)
		goto other;
	last_flow = f;
	if (blocked_port && f.dport == blocked_port) {
		dropped++;
		return XDP_DROP;
	}
	passed++;
	return XDP_PASS;
other:
	not_ip++;
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
