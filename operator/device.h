/* The Device reconciler's pure half: what should happen to a Device, and
 * the status it should have, from the Device, its Tailnet and the time.
 * The addresses themselves are claimed on the API server (device.c). */
#ifndef KNIT_OPERATOR_DEVICE_H
#define KNIT_OPERATOR_DEVICE_H

#include <stdint.h>
#include <time.h>

#include "ipam.h"

struct json;

enum device_step {
	DEVICE_WRITE_STATUS, /* status says why nothing more can be done */
	DEVICE_DELETE, /* an ephemeral device offline past the Tailnet's timeout */
	DEVICE_ALLOCATE, /* settle its addresses in pool4 and pool6 */
};

struct device_plan {
	struct ipam_pool pool4, pool6;
	uint64_t requeue_ms; /* 0: none asked for */
};

/* tn is the Device's Tailnet, NULL if it does not exist. Conditions for
 * DEVICE_WRITE_STATUS are set in status (a copy of the current one). */
enum device_step device_plan(const struct json *dev, const struct json *tn, time_t now, struct json *status,
			     struct device_plan *plan);
/* The status once the addresses are v4 and v6: status.addresses,
 * keyExpired and Ready; *requeue_ms lowered to the key's expiry. */
int device_desired_status(const struct json *dev, const char *v4, const char *v6, time_t now, struct json *status,
			  uint64_t *requeue_ms);

/* A week ahead, Devices warn that their node key is about to expire. */
#define DEVICE_KEY_WARN_SECONDS (7 * 24 * 3600)
/* The KeyExpiringSoon condition for a key expiring at expiry (0: never):
 * True within DEVICE_KEY_WARN_SECONDS; *requeue_ms lowered to when it
 * turns True. device_reconcile records a Warning Event on the turn. */
void device_key_warning(time_t expiry, time_t now, int64_t gen, struct json *status, uint64_t *requeue_ms);

#endif
