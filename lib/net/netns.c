#include "net/netns.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/nsfs.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>

int netns_open(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	/* NS_GET_NSTYPE says what kind of namespace the file is; a plain file
	 * (the mount point of a netns whose mount did not propagate to us)
	 * fails it. */
	int type = ioctl(fd, NS_GET_NSTYPE);
	if (type != CLONE_NEWNET) {
		close(fd);
		return -EINVAL;
	}
	return fd;
}

struct run_ctx {
	int nsfd;
	int (*fn)(void *arg);
	void *arg;
	int result;
};

static void *run_thread(void *arg)
{
	struct run_ctx *c = arg;

	if (setns(c->nsfd, CLONE_NEWNET) != 0)
		c->result = -errno;
	else
		c->result = c->fn(c->arg);
	return NULL;
}

int netns_run(int nsfd, int (*fn)(void *arg), void *arg)
{
	struct run_ctx c = { .nsfd = nsfd, .fn = fn, .arg = arg };
	pthread_t t;
	int err;

	/* A thread that shares our fs info (CLONE_FS) may still setns() into a
	 * network namespace: only mount namespaces need it unshared. */
	if ((err = pthread_create(&t, NULL, run_thread, &c)))
		return -err;
	pthread_join(t, NULL);
	return c.result;
}

static int nl_errno(int nlerr)
{
	switch (-nlerr) {
	case 0: return 0;
	case NLE_EXIST: return -EEXIST;
	case NLE_NODEV: return -ENODEV;
	case NLE_OBJ_NOTFOUND: return -ENOENT;
	case NLE_PERM: return -EPERM;
	case NLE_NOMEM: return -ENOMEM;
	case NLE_INVAL: return -EINVAL;
	case NLE_BUSY: return -EBUSY;
	default: return -EIO;
	}
}

struct rename_ctx {
	const char *old, *name;
};

/* In the target namespace: the moved link (its name unique: the caller
 * made it so) gets its new name. */
static int rename_link(void *arg)
{
	struct rename_ctx *c = arg;
	struct nl_sock *sk = nl_socket_alloc();
	struct rtnl_link *orig = NULL, *change = NULL;
	int err = -ENOMEM;

	if (!sk)
		return -ENOMEM;
	if ((err = nl_errno(nl_connect(sk, NETLINK_ROUTE))))
		goto out;
	if ((err = nl_errno(rtnl_link_get_kernel(sk, 0, c->old, &orig))))
		goto out;
	change = rtnl_link_alloc();
	if (!change) {
		err = -ENOMEM;
		goto out;
	}
	rtnl_link_set_name(change, c->name);
	err = nl_errno(rtnl_link_change(sk, orig, change, 0));
out:
	rtnl_link_put(change);
	rtnl_link_put(orig);
	nl_socket_free(sk);
	return err;
}

static int find_link(void *arg)
{
	return if_nametoindex(arg) ? 0 : -ENODEV;
}

bool netns_link_exists(int nsfd, const char *ifname)
{
	return netns_run(nsfd, find_link, (void *)ifname) == 0;
}

int netns_link_move(const char *ifname, int nsfd, const char *newname)
{
	struct nl_sock *sk = nl_socket_alloc();
	struct rtnl_link *orig = NULL, *change = NULL;
	struct rename_ctx rc = { .old = ifname, .name = newname };
	int err = -ENOMEM;

	if (!sk)
		return -ENOMEM;
	if (newname && netns_link_exists(nsfd, newname)) {
		err = -EEXIST;
		goto out;
	}
	if ((err = nl_errno(nl_connect(sk, NETLINK_ROUTE))))
		goto out;
	if ((err = nl_errno(rtnl_link_get_kernel(sk, 0, ifname, &orig))))
		goto out;
	change = rtnl_link_alloc();
	if (!change) {
		err = -ENOMEM;
		goto out;
	}
	rtnl_link_set_ns_fd(change, nsfd);
	if ((err = nl_errno(rtnl_link_change(sk, orig, change, 0))))
		goto out;
	if (newname && strcmp(newname, ifname))
		err = netns_run(nsfd, rename_link, &rc);
out:
	rtnl_link_put(change);
	rtnl_link_put(orig);
	nl_socket_free(sk);
	return err;
}
