/* Node key renewal for one identity: a third of the key's lifetime before
 * it expires (keyexpiry.h), a register call with no auth key and
 * oldNodeKey + renewProof (docs/control-protocol.md, "Key renewal") swaps
 * a fresh node key in on the same Device: same addresses, same peers, no
 * re-join. The old key works until the answer comes; then the owner's
 * engine takes the new one, and peers learn it from their netmaps.
 *
 * The owner (identity.c) keeps the state and the control client; it is
 * told through the upcalls below, all called on the loop. */
#ifndef KNIT_AGENT_KEYRENEW_H
#define KNIT_AGENT_KEYRENEW_H

#include <stdbool.h>

struct control_client;
struct keyrenew;
struct loop;
struct netmap;
struct state;

struct keyrenew_ops {
	/* True while the identity wants the map stream (up, not down). */
	bool (*running)(void *arg);
	/* The control client to call, NULL: none (no renewal now). */
	struct control_client *(*client)(void *arg);
	/* st->node_key is the new key and st is saved-worthy: hand the key
	 * to the engine, relays and paths, and save the state now. */
	void (*renewed)(void *arg);
	/* The server says this device is gone (KeyExpired, NotRegistered). */
	void (*logged_out)(void *arg, const char *why);
	/* st changed (the key's expiry); save it soon. */
	void (*changed)(void *arg);
	/* The knitd pod's token for the register call (podtoken.h; freed
	 * with podtoken_free), NULL: none. May be NULL itself. */
	char *(*pod_token)(void *arg);
};

/* st is the owner's and outlives the keyrenew. */
int keyrenew_new(struct keyrenew **out, struct loop *loop, struct state *st, const struct keyrenew_ops *ops,
		 void *arg);
void keyrenew_free(struct keyrenew *kr);
/* Arm the timer for the current key (or disarm it: logged out, no expiry,
 * not running). */
void keyrenew_schedule(struct keyrenew *kr);
/* A registration (with an auth key or again) gave the device a fresh key:
 * the failures count starts over. Then keyrenew_schedule. */
void keyrenew_registered(struct keyrenew *kr);
/* No renewal until the next keyrenew_schedule (logged out). */
void keyrenew_stop(struct keyrenew *kr);
/* The netmap's self says when our key expires (an administrator may have
 * changed the Tailnet's keyExpiry; a state file from an older knitd does
 * not know): follow it while it is about our current key. */
void keyrenew_learn(struct keyrenew *kr, const struct netmap *nm);
/* Node keys renewed since start. */
unsigned long keyrenew_count(const struct keyrenew *kr);

#endif
