/* Joining at start with no CLI (containers, unattended machines):
 * `knitd run --login-server URL` with the auth key from --authkey-file or
 * $KNIT_AUTHKEY registers the identity by itself, what `knit up --authkey`
 * does, retrying every 5 s while the server cannot be reached or is not
 * serving yet, and giving up loudly when it refuses. The key is wiped once
 * the identity is logged in. Loop thread. */
#ifndef KNIT_AGENT_JOIN_H
#define KNIT_AGENT_JOIN_H

struct identity;
struct join;
struct loop;

struct join_config {
	const char *login_server;
	const char *authkey_file; /* NULL: $KNIT_AUTHKEY */
	const char *hostname; /* NULL: the state's, else the system's */
};

/* Reads the key, sets the identity's login and sends the registration.
 * Returns 0 or a negative errno (logged); the join lives until
 * join_free(), which must come before the identity's. */
int join_start(struct join **out, struct loop *loop, struct identity *id, const struct join_config *cfg);
/* Stops retrying and wipes the key. NULL is a no-op. */
void join_free(struct join *j);

#endif
