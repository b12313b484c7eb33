// Maps with BTF for the map/handle tests (tests/runtime/test_maps_btf.py).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct val {
	int a;
	char s[4];
	struct bpf_timer t;
};

struct locked {
	struct bpf_spin_lock l;
	int n;
};

struct pt { __u16 x; __u16 y; };

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4); __type(key, __u32); __type(value, struct val); } h SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2); __type(key, __u32); __type(value, struct val); } arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4); __type(key, __u32); __type(value, struct locked); } lk SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 2); __type(key, __u32); __type(value, __u64); } pa SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_HASH); __uint(max_entries, 4); __type(key, struct pt); __type(value, __u32); } ph SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 8); __type(key, __u64); __type(value, __s32); } lru SEC(".maps");

SEC("tc")
int touch(struct __sk_buff *skb)
{
	__u32 k = 0;
	struct val *v = bpf_map_lookup_elem(&h, &k);
	if (v)
		v->a++;
	v = bpf_map_lookup_elem(&arr, &k);
	if (v)
		v->a++;
	struct locked *l = bpf_map_lookup_elem(&lk, &k);
	if (l) {
		bpf_spin_lock(&l->l);
		l->n++;
		bpf_spin_unlock(&l->l);
	}
	__u64 *x = bpf_map_lookup_elem(&pa, &k);
	if (x)
		(*x)++;
	struct pt p = {1, 2};
	__u32 *y = bpf_map_lookup_elem(&ph, &p);
	if (y)
		(*y)++;
	__u64 lk64 = 0;
	__s32 *z = bpf_map_lookup_elem(&lru, &lk64);
	if (z)
		(*z)++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
