#include "enforce.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "control/messages.h"
#include "json.h"
#include "log.h"
#include "policy/filter.h"

static size_t add_prefixes(struct filter_prefix *out, const struct netmap_prefix *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		out[i].family = p[i].family;
		out[i].bits = p[i].bits;
		memcpy(out[i].addr, p[i].addr, 16);
	}
	return n;
}

void enforce_sync(struct filter *f, const struct netmap *nm, struct json **applied, bool *set)
{
	const struct json *want = nm ? nm->packet_filter : NULL;
	struct filter_prefix *local;
	size_t n = 0, cap;
	char err[256];
	int r;

	if (!f)
		return;
	if (!*set || !json_equal(want, *applied)) {
		r = filter_set(f, want, err, sizeof(err));
		if (r) {
			log_warn("packet filter refused: the rules in force stay", "error=\"%s\"",
				 r == -ENOMEM ? "out of memory" : err);
		} else {
			json_free(*applied);
			*applied = want ? json_clone(want) : NULL;
			*set = !want || *applied;
			log_info("packet filter in force", "rules=%s", want ? "policy" : "allow-all (no policy)");
		}
	}
	if (!nm) {
		filter_set_local(f, NULL, 0);
		return;
	}
	cap = nm->self.naddresses + nm->self.nallowed_ips;
	local = calloc(cap ? cap : 1, sizeof(*local));
	if (!local)
		return;
	n += add_prefixes(local + n, nm->self.addresses, nm->self.naddresses);
	n += add_prefixes(local + n, nm->self.allowed_ips, nm->self.nallowed_ips);
	if (filter_set_local(f, local, n))
		log_warn("cannot set the filter's local destinations");
	free(local);
}
