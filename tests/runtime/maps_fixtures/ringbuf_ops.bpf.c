// Ring buffer producer operations driven from user space, for the sim-vs-kernel comparison in
// tests/runtime/test_maps_programs.py.  op 0: reserve ctx->size bytes (one of a few
// constants), tag the first byte and submit; op 1: reserve and discard; op 2: bpf_ringbuf_output of ctx->size
// bytes (at most 64); op 3: bpf_ringbuf_query(ctx->size).  ctx->ret: 1/0 for reserve,
// the helper's return otherwise.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct args {
	__u32 op;
	__u32 size;
	__u32 tag;
	__u32 pad;
	__s64 ret;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} rb SEC(".maps");

// bpf_ringbuf_reserve needs a constant size (ARG_CONST_ALLOC_SIZE_OR_ZERO): ctx->size picks one.
#define RESERVE(sz)                                                              \
	do {                                                                     \
		p = bpf_ringbuf_reserve(&rb, sz, 0);                             \
		a->ret = p != 0;                                                 \
		if (p) {                                                         \
			p[0] = a->tag;                                           \
			if (a->op == 0)                                          \
				bpf_ringbuf_submit(p, 0);                        \
			else                                                     \
				bpf_ringbuf_discard(p, 0);                       \
		}                                                                \
	} while (0)

SEC("syscall") int rb_op(struct args *a)
{
	__u8 buf[64] = {};
	__u8 *p;

	if (a->op == 0 || a->op == 1) {
		switch (a->size) {
		case 1: RESERVE(1); break;
		case 8: RESERVE(8); break;
		case 100: RESERVE(100); break;
		case 1000: RESERVE(1000); break;
		case 2000: RESERVE(2000); break;
		case 4000: RESERVE(4000); break;
		case 4088: RESERVE(4088); break;
		default: a->ret = -1;
		}
	} else if (a->op == 2) {
		buf[0] = a->tag;
		a->ret = bpf_ringbuf_output(&rb, buf, a->size & 63, 0);
	} else {
		a->ret = bpf_ringbuf_query(&rb, a->size);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
