// SPDX-License-Identifier: GPL-2.0
/* Timer latency benchmark: `arm` starts a one-shot CLOCK_MONOTONIC timer `nsecs` from now and
 * records when it armed it; the callback records when it ran (bpf_ktime_get_ns).  The
 * difference minus `nsecs` is how late the timer fired.  `bpfsim bench --timers N` runs it on
 * the emulator's real clock and on the kernel, side by side. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define CLOCK_MONOTONIC 1

struct slot {
	struct bpf_timer t;
	__u64 armed_at;
	__u64 fired_at;
	__u64 nsecs;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct slot);
} slots SEC(".maps");

struct args {
	__u64 nsecs;
};

static int fired(void *map, __u32 *key, struct slot *s)
{
	s->fired_at = bpf_ktime_get_ns();
	return 0;
}

SEC("syscall")
int arm(struct args *ctx)
{
	__u32 key = 0;
	struct slot *s = bpf_map_lookup_elem(&slots, &key);
	long err;

	if (!s)
		return 1;
	err = bpf_timer_init(&s->t, &slots, CLOCK_MONOTONIC);
	if (err && err != -16)	/* -EBUSY: initialised by an earlier run */
		return 2;
	if (bpf_timer_set_callback(&s->t, fired))
		return 3;
	s->fired_at = 0;
	s->nsecs = ctx->nsecs;
	s->armed_at = bpf_ktime_get_ns();
	return bpf_timer_start(&s->t, ctx->nsecs, 0) ? 4 : 0;
}

char _license[] SEC("license") = "GPL";
