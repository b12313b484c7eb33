// SPDX-License-Identifier: GPL-2.0
/* Flow table with idle expiry: a tc program keeps one HASH entry per IPv4 TCP/UDP 5-tuple,
 * and every entry carries a bpf_timer that deletes it after idle_timeout_ns without packets.
 * Each packet of the flow re-arms the timer (bpf_timer_start on an armed timer replaces its
 * expiry), so only idle flows disappear.
 *
 * Note the user reference rule: bpf_timer_init returns -EPERM once no fd or pin holds the
 * map, so keep `flows` open (or pinned) while the program is attached. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define CLOCK_MONOTONIC 1
#define EBUSY 16
/* The idle timeout; a loader may rewrite it before load (spec.variables["idle_timeout_ns"]). */
const volatile __u64 idle_timeout_ns = 30ULL * 1000000000ULL;	/* 30 s */

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow {
	struct bpf_timer timer;
	__u64 packets;
	__u64 bytes;
	__u64 first_seen;
	__u64 last_seen;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flow_key);
	__type(value, struct flow);
} flows SEC(".maps");

/* Timer callback: the flow was idle for idle_timeout_ns: forget it. */
static int flow_expired(void *map, struct flow_key *key, struct flow *f)
{
	bpf_printk("flow expired after %llu packets", f->packets);
	bpf_map_delete_elem(map, key);
	return 0;
}

SEC("tc")
int track(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u16 *ports;
	struct flow_key key = {};
	struct flow *f;
	__u64 now = bpf_ktime_get_ns();
	long err;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return TC_ACT_OK;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	ports = (void *)(ip + 1);
	if ((void *)(ports + 2) > data_end)
		return TC_ACT_OK;

	key.saddr = ip->saddr;
	key.daddr = ip->daddr;
	key.sport = bpf_ntohs(ports[0]);
	key.dport = bpf_ntohs(ports[1]);
	key.proto = ip->protocol;

	f = bpf_map_lookup_elem(&flows, &key);
	if (!f) {
		struct flow fresh = { .first_seen = now };

		if (bpf_map_update_elem(&flows, &key, &fresh, BPF_NOEXIST))
			return TC_ACT_OK;	/* table full (or raced): do not track */
		f = bpf_map_lookup_elem(&flows, &key);
		if (!f)
			return TC_ACT_OK;
		err = bpf_timer_init(&f->timer, &flows, CLOCK_MONOTONIC);
		if (err && err != -EBUSY)
			return TC_ACT_OK;	/* -EPERM: nobody holds the map */
		bpf_timer_set_callback(&f->timer, flow_expired);
	}
	f->packets++;
	f->bytes += skb->len;
	f->last_seen = now;
	bpf_timer_start(&f->timer, idle_timeout_ns, 0);	/* (re)arm the idle timeout */
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
