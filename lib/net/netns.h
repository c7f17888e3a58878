/* Network namespaces: running a function inside one, and moving a link
 * into one. knitd hands each pod identity's TUN device to the pod's
 * namespace and keeps configuring it there; lib/net/iface.c works by name
 * in the calling thread's namespace, so its calls run through
 * netns_run(), in a short-lived thread that entered the namespace
 * (setns() changes only the calling thread's namespace, and the thread
 * ends with it, so the caller's own namespace is never touched). */
#ifndef KNIT_NET_NETNS_H
#define KNIT_NET_NETNS_H

#include <stdbool.h>

/* Opens the namespace file path ("/var/run/netns/cni-...",
 * "/proc/PID/ns/net"): an fd (O_CLOEXEC) or a negative errno; -EINVAL
 * when path is not a network namespace (another kind, or a plain file:
 * a netns mount that did not propagate into our mount namespace). */
int netns_open(const char *path);
/* Runs fn(arg) in a thread inside the namespace nsfd and returns what fn
 * returned, or a negative errno if the thread could not enter it. */
int netns_run(int nsfd, int (*fn)(void *arg), void *arg);
/* Moves the link ifname of the caller's namespace into nsfd, renamed
 * newname there (NULL: keeps its name). -EEXIST when newname is taken
 * there (the link then stays where it was), other negative errnos. */
int netns_link_move(const char *ifname, int nsfd, const char *newname);
/* The link ifname exists in nsfd. */
bool netns_link_exists(int nsfd, const char *ifname);

#endif
