/* knit-cni's parsers of what a runtime hands it: the first byte picks the
 * command, the rest is the configuration on stdin. Whatever parses has its
 * prevResult converted to the configuration's version and knit's entries
 * appended; the result must dump, and read back equal. Pure: no knitd, no
 * netns (plugin_run would dial whatever "socket" the input names). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cniresult.h"
#include "json.h"
#include "netconf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const cmds[] = { "ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION", "BOGUS", NULL };
	static const char *const addrs[] = { "100.64.0.9/32", "fd7a:115c:a1e0::9/128" };
	static const char *const routes[] = { "100.64.0.0/10" };
	struct cniresult_attach a = { "knit0", "/var/run/netns/p", addrs, 2, routes, 1 };
	struct netconf_env env = {
		.containerid = "c0ffee",
		.netns = "/var/run/netns/p",
		.ifname = "eth0",
		.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u",
	};
	struct buf b = BUF_INIT(1 << 24);
	struct netconf nc;
	struct cnierror e;
	struct json *r, *again;

	if (size < 1)
		return 0;
	env.command = cmds[data[0] % 8];
	if (netconf_parse(&nc, &env, (const char *)data + 1, size - 1, &e)) {
		if (e.code <= 0 || cnierror_dump(&e, nc.cni_version, &b))
			abort();
		buf_free(&b);
		return 0;
	}
	if (nc.prev_result && (r = cniresult_convert(nc.prev_result, nc.cni_version, nc.cni_version, &e))) {
		if (cniresult_append(r, nc.cni_version, &a) || json_dump(r, &b, 0))
			abort();
		again = json_parse((const char *)b.data, b.len, NULL);
		if (!again || !json_equal(r, again) ||
		    cniresult_find_interface(again, "knit0", "/var/run/netns/p") < 0)
			abort();
		json_free(again);
		json_free(r);
	}
	netconf_free(&nc);
	buf_free(&b);
	return 0;
}
