// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The part of Soft-RoCE that needs C: verbs.h's inline functions
 * (ibv_post_send, ibv_poll_cq), its static-provider machinery, and the
 * RDMA netlink constants. Everything else lives in Rust (src/lib.rs).
 *
 * Every function reports failure with a negative errno or NULL and a
 * sentence in the caller's buffer that names the step that failed.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <rdma/rdma_netlink.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <infiniband/verbs.h>

#define PORT 1
#define WAIT_SECONDS 30

struct dsr_ctx {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_qp *qp[2];
	int gid_index;
	union ibv_gid gid;
	enum ibv_mtu mtu;
	uint64_t next_wr_id;
};

static void say(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* Says "@fmt: strerror(@e)" and returns -@e. */
static int fail(char *err, size_t len, int e, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	say(err, len, "%s: %s", what, strerror(e));
	return -e;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Sets IFF_UP on @name and, when @ipv4 is given, a /24 address first. */
static int netdev_up(int fd, const char *name, const char *ipv4, char *err, size_t len)
{
	struct ifreq ifr;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;

	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ipv4) {
		sin->sin_family = AF_INET;
		if (inet_pton(AF_INET, ipv4, &sin->sin_addr) != 1) {
			say(err, len, "%s is not an IPv4 address", ipv4);
			return -EINVAL;
		}
		if (ioctl(fd, SIOCSIFADDR, &ifr) < 0)
			return fail(err, len, errno, "SIOCSIFADDR %s on %s", ipv4, name);
		inet_pton(AF_INET, "255.255.255.0", &sin->sin_addr);
		if (ioctl(fd, SIOCSIFNETMASK, &ifr) < 0)
			return fail(err, len, errno, "SIOCSIFNETMASK on %s", name);
		/* A 4096-byte RoCE path MTU: a quarter of the packets of 1500. */
		ifr.ifr_mtu = 9000;
		if (ioctl(fd, SIOCSIFMTU, &ifr) < 0)
			return fail(err, len, errno, "SIOCSIFMTU 9000 on %s", name);
	}
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return fail(err, len, errno, "SIOCGIFFLAGS on %s (is its driver in the kernel?)", name);
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		return fail(err, len, errno, "SIOCSIFFLAGS IFF_UP on %s", name);
	return 0;
}

/* Appends a string attribute at @at of @buf (@size bytes); 0 if it does not fit. */
static size_t put_attr(char *buf, size_t size, size_t at, unsigned short type, const char *s)
{
	struct nlattr *a = (struct nlattr *)(buf + at);
	size_t n = strlen(s) + 1;

	if (!at || at + NLA_ALIGN(NLA_HDRLEN + n) > size)
		return 0;
	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + n;
	memcpy(buf + at + NLA_HDRLEN, s, n);
	return at + NLA_ALIGN(a->nla_len);
}

/* `rdma link add @ibdev type rxe netdev @netdev`, over NETLINK_RDMA. */
static int rxe_link_add(const char *netdev, const char *ibdev, char *err, size_t len)
{
	char buf[512] __attribute__((aligned(NLMSG_ALIGNTO)));
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	struct nlmsgerr *e;
	size_t at = NLMSG_HDRLEN;
	ssize_t n;
	int fd;

	memset(buf, 0, sizeof(buf));
	at = put_attr(buf, sizeof(buf), at, RDMA_NLDEV_ATTR_DEV_NAME, ibdev);
	at = put_attr(buf, sizeof(buf), at, RDMA_NLDEV_ATTR_LINK_TYPE, "rxe");
	at = put_attr(buf, sizeof(buf), at, RDMA_NLDEV_ATTR_NDEV_NAME, netdev);
	if (!at) {
		say(err, len, "device names %s and %s are too long for one request", ibdev, netdev);
		return -ENAMETOOLONG;
	}
	h->nlmsg_len = at;
	h->nlmsg_type = RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_NEWLINK);
	h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	h->nlmsg_seq = 1;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_RDMA);
	if (fd < 0)
		return fail(err, len, errno, "socket(NETLINK_RDMA) (is CONFIG_INFINIBAND set?)");
	if (sendto(fd, buf, at, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
		int e = errno;

		close(fd);
		return fail(err, len, e, "RDMA_NLDEV_CMD_NEWLINK: send");
	}
	n = recv(fd, buf, sizeof(buf), 0);
	if (n < 0) {
		int e = errno;

		close(fd);
		return fail(err, len, e, "RDMA_NLDEV_CMD_NEWLINK: receive");
	}
	close(fd);
	if (n < (ssize_t)NLMSG_LENGTH(sizeof(*e)) || h->nlmsg_type != NLMSG_ERROR) {
		say(err, len, "RDMA_NLDEV_CMD_NEWLINK: no acknowledgement (%zd bytes, type %u)", n,
		    n >= (ssize_t)NLMSG_HDRLEN ? h->nlmsg_type : 0);
		return -EPROTO;
	}
	e = NLMSG_DATA(h);
	/* An earlier run in this boot made it: use it. */
	if (e->error == -EEXIST)
		return 0;
	if (e->error) {
		say(err, len, "rdma link add %s type rxe netdev %s: %s%s", ibdev, netdev, strerror(-e->error),
		    e->error == -EOPNOTSUPP ? " (is CONFIG_RDMA_RXE set?)" : "");
		return e->error;
	}
	return 0;
}

int dsr_link_add(const char *netdev, const char *ibdev, const char *ipv4, char *err, size_t len)
{
	int fd, r;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(err, len, errno, "socket(AF_INET) (is CONFIG_INET set?)");
	/* Loopback RoCE resolves the peer's address through a local route. */
	r = netdev_up(fd, "lo", NULL, err, len);
	if (!r)
		r = netdev_up(fd, netdev, ipv4, err, len);
	close(fd);
	if (r)
		return r;
	return rxe_link_add(netdev, ibdev, err, len);
}

static int is_ipv4_mapped(const union ibv_gid *gid)
{
	static const unsigned char prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return !memcmp(gid->raw, prefix, sizeof(prefix));
}

/* The port's RoCE v2 GID of the netdev's IPv4 address; it appears shortly
 * after the address, from a kernel work item. */
static int find_gid(struct dsr_ctx *c, char *err, size_t len)
{
	double deadline = now() + WAIT_SECONDS;
	struct ibv_port_attr port;
	int r;

	do {
		/* ibv_query_port() and ibv_modify_qp() return the error number. */
		r = ibv_query_port(c->ctx, PORT, &port);
		if (r)
			return fail(err, len, r, "ibv_query_port");
		if (port.state == IBV_PORT_ACTIVE) {
			for (int i = 0; i < port.gid_tbl_len; i++) {
				struct ibv_gid_entry entry;

				if (ibv_query_gid_ex(c->ctx, PORT, i, &entry, 0))
					continue;
				if (entry.gid_type == IBV_GID_TYPE_ROCE_V2 && is_ipv4_mapped(&entry.gid)) {
					c->gid_index = i;
					c->gid = entry.gid;
					c->mtu = port.active_mtu;
					return 0;
				}
			}
		}
		usleep(20000);
	} while (now() < deadline);

	say(err, len, "port %d is %s and has no RoCE v2 IPv4 GID after %d s", PORT, ibv_port_state_str(port.state),
	    WAIT_SECONDS);
	return -ETIMEDOUT;
}

static int connect_qp(struct dsr_ctx *c, struct ibv_qp *qp, uint32_t peer, char *err, size_t len)
{
	struct ibv_qp_attr a;
	int r;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_INIT;
	a.port_num = PORT;
	a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	r = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
	if (r)
		return fail(err, len, r, "QP %u to INIT", qp->qp_num);
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = c->mtu;
	a.dest_qp_num = peer;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = c->gid;
	a.ah_attr.grh.sgid_index = c->gid_index;
	a.ah_attr.grh.hop_limit = 1;
	a.ah_attr.port_num = PORT;
	r = ibv_modify_qp(qp, &a,
			  IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
				  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
	if (r)
		return fail(err, len, r, "QP %u to RTR", qp->qp_num);
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	/* 4.3 s before a retransmission: TCG guests are slow. */
	a.timeout = 20;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 1;
	r = ibv_modify_qp(qp, &a,
			  IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
				  IBV_QP_MAX_QP_RD_ATOMIC);
	if (r)
		return fail(err, len, r, "QP %u to RTS", qp->qp_num);
	return 0;
}

void dsr_close(struct dsr_ctx *c)
{
	if (!c)
		return;
	for (int i = 0; i < 2; i++)
		if (c->qp[i])
			ibv_destroy_qp(c->qp[i]);
	if (c->cq)
		ibv_destroy_cq(c->cq);
	if (c->pd)
		ibv_dealloc_pd(c->pd);
	if (c->ctx)
		ibv_close_device(c->ctx);
	free(c);
}

/* Opens @ibdev with two RC queue pairs connected to each other. */
struct dsr_ctx *dsr_open(const char *ibdev, char *err, size_t len)
{
	struct ibv_qp_init_attr init = {
		.cap = { .max_send_wr = 16, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
		.sq_sig_all = 1,
	};
	struct ibv_device **list;
	struct dsr_ctx *c;
	int n = 0;

	c = calloc(1, sizeof(*c));
	if (!c) {
		say(err, len, "out of memory");
		return NULL;
	}
	list = ibv_get_device_list(&n);
	if (!list) {
		say(err, len, "ibv_get_device_list: %s (is CONFIG_INFINIBAND_USER_ACCESS set?)", strerror(errno));
		goto fail;
	}
	for (int i = 0; i < n && !c->ctx; i++) {
		if (strcmp(ibv_get_device_name(list[i]), ibdev))
			continue;
		c->ctx = ibv_open_device(list[i]);
		if (!c->ctx) {
			fail(err, len, errno, "ibv_open_device %s", ibdev);
			ibv_free_device_list(list);
			goto fail;
		}
	}
	ibv_free_device_list(list);
	if (!c->ctx) {
		say(err, len, "libibverbs found %d device(s), none named %s", n, ibdev);
		goto fail;
	}
	if (find_gid(c, err, len))
		goto fail;
	c->pd = ibv_alloc_pd(c->ctx);
	if (!c->pd) {
		say(err, len, "ibv_alloc_pd: %s", strerror(errno));
		goto fail;
	}
	c->cq = ibv_create_cq(c->ctx, 32, NULL, NULL, 0);
	if (!c->cq) {
		say(err, len, "ibv_create_cq: %s", strerror(errno));
		goto fail;
	}
	init.send_cq = init.recv_cq = c->cq;
	for (int i = 0; i < 2; i++) {
		c->qp[i] = ibv_create_qp(c->pd, &init);
		if (!c->qp[i]) {
			say(err, len, "ibv_create_qp (RC): %s", strerror(errno));
			goto fail;
		}
	}
	if (connect_qp(c, c->qp[0], c->qp[1]->qp_num, err, len) ||
	    connect_qp(c, c->qp[1], c->qp[0]->qp_num, err, len))
		goto fail;
	return c;
fail:
	dsr_close(c);
	return NULL;
}

/* ibv_reg_mr for local and remote read and write; NULL with errno set. */
struct ibv_mr *dsr_reg(struct dsr_ctx *c, void *addr, size_t length)
{
	return ibv_reg_mr(c->pd, addr, length,
			  IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
}

/* A region peers may only read: the kernel pins its pages without FOLL_WRITE. */
struct ibv_mr *dsr_reg_read_only(struct dsr_ctx *c, void *addr, size_t length)
{
	return ibv_reg_mr(c->pd, addr, length, IBV_ACCESS_REMOTE_READ);
}

/* 0 or a positive errno, as ibv_dereg_mr. */
int dsr_dereg(struct ibv_mr *mr)
{
	return ibv_dereg_mr(mr);
}

/*
 * One RDMA WRITE (@write) or READ of @length bytes on the first queue
 * pair: between @local_addr in @local and @remote_addr in @remote, which
 * the second queue pair serves. Waits for its completion.
 */
int dsr_rdma(struct dsr_ctx *c, int write, struct ibv_mr *local, void *local_addr, struct ibv_mr *remote,
	     void *remote_addr, uint32_t length, char *err, size_t len)
{
	struct ibv_sge sge = { .addr = (uintptr_t)local_addr, .length = length, .lkey = local->lkey };
	struct ibv_send_wr wr = {
		.wr_id = ++c->next_wr_id,
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = { .remote_addr = (uintptr_t)remote_addr, .rkey = remote->rkey },
	};
	const char *what = write ? "RDMA WRITE" : "RDMA READ";
	struct ibv_send_wr *bad = NULL;
	double deadline = now() + WAIT_SECONDS;
	struct ibv_wc wc;
	int r;

	r = ibv_post_send(c->qp[0], &wr, &bad);
	if (r) {
		say(err, len, "%s: ibv_post_send: %s", what, strerror(r));
		return -r;
	}
	while ((r = ibv_poll_cq(c->cq, 1, &wc)) == 0) {
		/* rxe completes the request from its own work items. */
		sched_yield();
		if (now() > deadline) {
			say(err, len, "%s of %u bytes: no completion within %d s", what, length, WAIT_SECONDS);
			return -ETIMEDOUT;
		}
	}
	if (r < 0) {
		say(err, len, "%s: ibv_poll_cq: %d", what, r);
		return -EIO;
	}
	if (wc.status != IBV_WC_SUCCESS || wc.wr_id != wr.wr_id) {
		say(err, len, "%s of %u bytes: completion %s (vendor error %u, wr %llu of %llu)", what, length,
		    ibv_wc_status_str(wc.status), wc.vendor_err, (unsigned long long)wc.wr_id,
		    (unsigned long long)wr.wr_id);
		return -EIO;
	}
	return 0;
}
