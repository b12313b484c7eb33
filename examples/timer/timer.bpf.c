// SPDX-License-Identifier: GPL-2.0
/* Our version of the bpf_timer_init() documentation example (bpf-helpers(7) / docs.ebpf.io):
 * an ARRAY map of one element whose value holds a struct bpf_timer, and a cgroup_skb/egress
 * program that resets the element, initializes its timer, sets a callback, starts the timer
 * with 0 ns and cancels it again.
 *
 * The catch the documentation describes: bpf_timer_init() returns -EPERM when the map has no
 * user reference left (no open fd, no pin).  Pin only the program, close the loader and run
 * the pinned program: it returns 1.  Pin the map too and it returns 0. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define CLOCK_MONOTONIC 1
#define EBUSY 16

struct map_elem {
	int counter;
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, struct map_elem);
} hmap SEC(".maps");

static int timer_cb(void *map, int *key, struct map_elem *val)
{
	val->counter++;
	bpf_printk("timer_cb: key %d fired %d time(s)", *key, val->counter);
	return 0;
}

SEC("cgroup_skb/egress")
int bpf_prog1(struct __sk_buff *skb)
{
	struct map_elem init = {};
	struct map_elem *val;
	int key = 0;
	long err;

	bpf_map_update_elem(&hmap, &key, &init, BPF_ANY);
	val = bpf_map_lookup_elem(&hmap, &key);
	if (!val)
		return 1;
	err = bpf_timer_init(&val->timer, &hmap, CLOCK_MONOTONIC);
	if (err && err != -EBUSY)
		return 1;
	bpf_timer_set_callback(&val->timer, timer_cb);
	bpf_timer_start(&val->timer, 0, 0);
#ifndef NO_CANCEL
	bpf_timer_cancel(&val->timer);
#endif
	return 0;
}

char _license[] SEC("license") = "GPL";
