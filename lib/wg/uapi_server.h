/* Serves the WireGuard UAPI (see uapi.h) on <dir>/<ifname>.sock, on the
 * loop, so that wg(8) can show and configure a knit engine.
 *
 * The directory is created 0755 and the socket 0600, as wg(8) and
 * wireguard-go expect; a stale socket nobody answers on is replaced, a live
 * one is left alone (-EADDRINUSE), anything else at the path is never
 * touched (-EEXIST): the rules of net/unixsock.h. Each connection may
 * carry any number of requests; requests are capped in size; a client may
 * go away at any time. */
#ifndef KNIT_WG_UAPI_SERVER_H
#define KNIT_WG_UAPI_SERVER_H

#include "loop.h"
#include "wg/uapi.h"

#define UAPI_SERVER_DIR "/var/run/wireguard"

/* Called on the loop thread. Both return 0 or a negative errno, which is
 * what the client gets as errno=. get fills *out (zeroed on entry) with
 * malloc'd arrays that the server frees with uapi_device_release(). */
struct uapi_ops {
	int (*get)(void *arg, struct uapi_device *out);
	int (*set)(void *arg, const struct uapi_config *cfg);
};

struct uapi_server;

/* dir NULL means UAPI_SERVER_DIR. ops is not copied and must outlive the
 * server. Returns 0 or a negative errno. */
int uapi_server_open(struct uapi_server **out, struct loop *loop, const char *dir, const char *ifname,
		     const struct uapi_ops *ops, void *arg);
/* Closes every connection, removes the socket file; NULL is a no-op. */
void uapi_server_close(struct uapi_server *s);
const char *uapi_server_path(const struct uapi_server *s);

#endif
