// SPDX-License-Identifier: GPL-2.0
/* timer.bpf.c without the cancel: the timer is started with 0 ns and left armed.  A
 * cgroup_skb program runs with bottom halves disabled, so the callback runs right after the
 * program (on the emulator: at the next clock advance) and its bpf_printk line appears then. */
#define NO_CANCEL 1
#include "timer.bpf.c"
