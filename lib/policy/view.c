/* A device's view across a change: which peers it gains and loses. */
#include <errno.h>
#include <stdlib.h>

#include "policy.h"
#include "strmap.h"

int policy_view_diff(const struct strmap *had, const struct policy_names *now, struct policy_names *added,
		     struct policy_names *removed)
{
	struct strmap *set = strmap_new();
	size_t n_had = had ? strmap_len(had) : 0;
	int ret = set ? 0 : -ENOMEM;

	*added = (struct policy_names){ 0 };
	*removed = (struct policy_names){ 0 };
	/* Most views survive a change as they were: as many names, all seen
	 * before (now's are distinct), is the same set, with no set built. */
	if (!ret && had && n_had == now->len) {
		size_t i = 0;

		while (i < now->len && strmap_has(had, now->v[i]))
			i++;
		if (i == now->len) {
			strmap_free(set);
			added->v = malloc(sizeof(*added->v));
			removed->v = malloc(sizeof(*removed->v));
			if (added->v && removed->v)
				return 0;
			policy_names_free(added);
			policy_names_free(removed);
			return -ENOMEM;
		}
	}
	if (!ret) {
		added->v = malloc((now->len + 1) * sizeof(*added->v));
		removed->v = malloc((n_had + 1) * sizeof(*removed->v));
		if (!added->v || !removed->v)
			ret = -ENOMEM;
	}
	for (size_t i = 0; !ret && i < now->len; i++) {
		if (!had || !strmap_has(had, now->v[i]))
			added->v[added->len++] = now->v[i];
		ret = strmap_set(set, now->v[i], (void *)1, NULL);
	}
	for (struct strmap_entry *e = had && !ret ? strmap_first(had) : NULL; e; e = strmap_next(had, e))
		if (!strmap_has(set, strmap_key(e)))
			removed->v[removed->len++] = strmap_key(e);
	strmap_free(set);
	if (ret) {
		policy_names_free(added);
		policy_names_free(removed);
	}
	return ret;
}
