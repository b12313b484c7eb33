// Program-side map operations driven from user space, for the sim-vs-kernel comparison in
// tests/runtime/test_maps_programs.py: each SEC("syscall") program applies one operation
// (ctx->op) with key ctx->key to its map and reports the helper's return value in ctx->ret.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct args {
	__u32 op;	// 0 update ANY, 1 lookup, 2 delete, 3 update NOEXIST, 4 update EXIST,
			// 5 lookup, delete, then read the value through the stale pointer
	__u32 key;
	__s64 ret;
};

#define MAP(name, mtype, flags)                                                   \
	struct {                                                                  \
		__uint(type, mtype);                                              \
		__uint(max_entries, 16);                                          \
		__uint(map_flags, flags);                                         \
		__type(key, __u32);                                               \
		__type(value, __u64);                                             \
	} name SEC(".maps");                                                      \
	SEC("syscall") int op_##name(struct args *a)                              \
	{                                                                         \
		__u32 k = a->key;                                                 \
		__u64 v = k, *p;                                                  \
		switch (a->op) {                                                  \
		case 0: a->ret = bpf_map_update_elem(&name, &k, &v, BPF_ANY); break;     \
		case 1: p = bpf_map_lookup_elem(&name, &k); a->ret = p ? (__s64)*p : -1; break; \
		case 2: a->ret = bpf_map_delete_elem(&name, &k); break;                  \
		case 3: a->ret = bpf_map_update_elem(&name, &k, &v, BPF_NOEXIST); break; \
		case 4: a->ret = bpf_map_update_elem(&name, &k, &v, BPF_EXIST); break;   \
		case 5: /* read through a pointer to a just-deleted element (RCU) */   \
			p = bpf_map_lookup_elem(&name, &k);                      \
			if (!p) { a->ret = -1; break; }                           \
			bpf_map_delete_elem(&name, &k);                           \
			a->ret = (__s64)*p; break;                                \
		}                                                                 \
		return 0;                                                         \
	}

MAP(lru, BPF_MAP_TYPE_LRU_HASH, 0)
MAP(lru_pcl, BPF_MAP_TYPE_LRU_HASH, BPF_F_NO_COMMON_LRU)
MAP(hash, BPF_MAP_TYPE_HASH, 0)
MAP(hash_np, BPF_MAP_TYPE_HASH, BPF_F_NO_PREALLOC)
MAP(arr, BPF_MAP_TYPE_ARRAY, 0)
MAP(phash, BPF_MAP_TYPE_PERCPU_HASH, 0)
MAP(lru_ph, BPF_MAP_TYPE_LRU_PERCPU_HASH, 0)
MAP(parr, BPF_MAP_TYPE_PERCPU_ARRAY, 0)

char LICENSE[] SEC("license") = "GPL";
