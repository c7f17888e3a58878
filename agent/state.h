/* knitd's state file: what a node must remember across restarts.
 *
 *   {"version":1,
 *    "machineKey":"privkey:<hex>", "nodeKey":"privkey:<hex>", "discoKey":"privkey:<hex>",
 *    "controlKey":"ctrlkey:<hex>", "nextControlKey":"ctrlkey:<hex>", "loginServer":"http://...",
 *    "prefs":{"hostname":"laptop","advertiseTags":["tag:ci"],"advertiseRoutes":["10.0.0.0/24"]},
 *    "device":{"device":"laptop-3f9a2c","name":"laptop","addresses":[...],"dnsSuffix":"...",
 *              "keyExpiry":1796000000}, "keyIssued":1780000000,
 *    "netmap":{"type":"full",...}}
 *
 * The private keys never leave this file and this process: the file is
 * mode 0600 in a directory made 0700, written whole to a temporary file,
 * fsync'd and renamed over the old one (so a crash leaves the old or the
 * new file, never half of one), and every copy in memory is wiped. The
 * last netmap lets knitd keep forwarding after a restart while the
 * control plane is down.
 *
 * Each save first gives the file it replaces a second name, path.prev
 * (a hard link: no copy). A file that no longer parses (truncated by a
 * full disk, hand-edited, corrupt) is then not the end: the loader moves
 * it to path.corrupt and comes back on path.prev, and says so. */
#ifndef KNIT_AGENT_STATE_H
#define KNIT_AGENT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/messages.h"

#define STATE_PATH_DEFAULT "/var/lib/knit/knitd.state"
#define STATE_MAX_BYTES ((size_t)64 << 20)
#define STATE_PREV_SUFFIX ".prev"
#define STATE_CORRUPT_SUFFIX ".corrupt"

struct json;

struct state {
	uint8_t machine_key[32]; /* private halves */
	uint8_t node_key[32];
	uint8_t disco_key[32];
	uint8_t control_key[32]; /* public: the pinned control key */
	bool has_control_key;
	/* public: the key the pinned one announced to follow it (control/ctrlpin.h) */
	uint8_t next_control_key[32];
	bool has_next_control_key;
	char *login_server; /* NULL: none yet */

	/* What knit up asked for, to come back with after a restart. */
	char *hostname; /* NULL: the system's */
	char **tags;
	size_t ntags;
	struct netmap_prefix *routes;
	size_t nroutes;

	/* What register answered; device.device == NULL when logged out.
	 * device.key_expiry: when node_key expires (0: never). */
	struct register_response device;
	int64_t key_issued; /* when node_key was registered, Unix seconds; 0: unknown */
	/* Not saved: loaded from path.prev (state_load_recover), which may
	 * hold a node key the server has since seen renewed. */
	bool recovered;
	/* The last full netmap as JSON, NULL if none. */
	struct json *netmap;
};

/* Fresh machine, node and disco keys, nothing else. -ENOMEM. */
int state_new(struct state **out);
/* -ENOENT: no file (make a new state); -EACCES: group or others may
 * access it (it holds private keys); -EINVAL: not a valid state file (err
 * names the field); -EFBIG; other negative errnos from the system. err
 * says what to do in every case. */
int state_load(const char *path, struct state **out, char *err, size_t errlen);
/* As state_load, for a file that does not parse (-EINVAL) falls back to
 * path.prev: on success then, path is moved to path.corrupt and note (a
 * line for the log) says what happened; note is "" when path loaded. When
 * both are unusable, err names both. */
int state_load_recover(const char *path, struct state **out, char *err, size_t errlen, char *note, size_t notelen);
/* A state file's text: the untrusted-input core of state_load (-EINVAL,
 * err names the field; -EFBIG; -ENOMEM). The parsed tree is wiped. */
int state_parse(const char *text, size_t len, struct state **out, char *err, size_t errlen);
/* Unlinks path and the .prev and .corrupt beside it. */
void state_remove(const char *path);
/* Writes st atomically (see above), creating missing directories 0700.
 * Returns 0 or a negative errno, with err naming the step that failed. */
int state_save(const struct state *st, const char *path, char *err, size_t errlen);
/* Wipes the private keys. NULL is a no-op. */
void state_free(struct state *st);

/* Keeps a copy of nm as the last netmap. -ENOMEM. */
int state_set_netmap(struct state *st, const struct netmap *nm);
/* Lets go of the copy: it is only needed for state_save(), and the
 * identity holds the netmap itself (with hundreds of pod identities of
 * hundreds of peers each, the copies were most of knitd's memory). */
void state_forget_netmap(struct state *st);
/* The last netmap; false (err says why) if none or it does not parse. */
bool state_get_netmap(const struct state *st, struct netmap *out, char *err, size_t errlen);
/* Takes the contents of r (r is left empty) as the registered device. */
void state_set_device(struct state *st, struct register_response *r);
bool state_logged_in(const struct state *st);
/* After a logout the node key is dead: forget the device and the netmap,
 * and make a new node key. The machine key stays. */
void state_logout(struct state *st);
/* Replaces the preferences (copied). -ENOMEM leaves them unchanged. */
int state_set_prefs(struct state *st, const char *hostname, char *const *tags, size_t ntags,
		    const struct netmap_prefix *routes, size_t nroutes);

#endif
