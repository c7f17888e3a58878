/* A listening unix stream socket with one set of rules, for knitd's local
 * API and the WireGuard UAPI socket:
 *
 * - the parent directory is made 0755 if it is missing (one level);
 * - the socket is chmod 0600 between bind() and listen(), so nobody can
 *   connect before the mode is right;
 * - a socket file nobody answers on (left by a process that crashed) is
 *   replaced; one that answers belongs to a live process (-EADDRINUSE);
 *   anything that is not a socket is never touched (-EEXIST);
 * - on close, the file is removed only while it is still the one we bound
 *   (another process may have replaced it since). */
#ifndef KNIT_NET_UNIXSOCK_H
#define KNIT_NET_UNIXSOCK_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/un.h>

struct unixsock {
	int fd; /* listening, non-blocking, close-on-exec; -1 when closed */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev; /* the bound file, to recognise it at close */
	ino_t ino;
};

/* Binds and listens on path as above. Returns 0, -ENAMETOOLONG, -EEXIST
 * (a file that is not a socket), -EADDRINUSE (a live socket), or another
 * negative errno from the system; on failure s->fd is -1 and nothing is
 * left behind. */
int unixsock_listen(struct unixsock *s, const char *path, int backlog);
/* Closes the socket (unless fd was handed to another owner and set to -1)
 * and removes its file if it is still ours. Safe to call again, and on a
 * unixsock whose listen failed. */
void unixsock_close(struct unixsock *s);
/* True if something accepts connections on path (a live server). */
bool unixsock_answers(const char *path);

#endif
