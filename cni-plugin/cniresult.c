#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cniresult.h"
#include "json.h"
#include "netconf.h"

bool cniresult_prefix_parse(const char *s, struct cniresult_prefix *p)
{
	char addr[INET6_ADDRSTRLEN];
	const char *slash = s ? strchr(s, '/') : NULL;
	size_t n;
	char *end;
	unsigned long len;

	if (!slash || (n = (size_t)(slash - s)) == 0 || n >= sizeof(addr))
		return false;
	memcpy(addr, s, n);
	addr[n] = '\0';
	memset(p, 0, sizeof(*p));
	if (inet_pton(AF_INET, addr, p->addr) == 1)
		p->family = AF_INET;
	else if (inet_pton(AF_INET6, addr, p->addr) == 1)
		p->family = AF_INET6;
	else
		return false;
	if (slash[1] < '0' || slash[1] > '9' || (slash[1] == '0' && slash[2]))
		return false;
	len = strtoul(slash + 1, &end, 10);
	if (*end || len > (p->family == AF_INET ? 32u : 128u))
		return false;
	p->len = (unsigned)len;
	return true;
}

static bool version_known(const char *v)
{
	return netconf_version_supported(v);
}

static void strip(struct json *arr, const char *const *keys)
{
	for (size_t i = 0; i < json_array_len(arr); i++)
		for (const char *const *k = keys; *k; k++)
			json_object_del(json_array_at(arr, i), *k);
}

/* The shape checks a plugin needs to rely on: lists of objects, addresses
 * that parse, interface indexes in range. */
static bool shape_valid(const struct json *r, struct cnierror *e)
{
	const struct json *ifs = json_get(r, "interfaces"), *ips = json_get(r, "ips"),
			  *routes = json_get(r, "routes");
	struct cniresult_prefix p;

	if ((ifs && !json_is_array(ifs)) || (ips && !json_is_array(ips)) || (routes && !json_is_array(routes))) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode prevResult",
			     "prevResult's interfaces, ips and routes must be arrays");
		return false;
	}
	for (size_t i = 0; i < json_array_len(ifs); i++)
		if (!json_str(json_get(json_array_at(ifs, i), "name"))) {
			cnierror_set(e, CNI_ERR_DECODE, "failed to decode prevResult",
				     "prevResult.interfaces[%zu] has no name", i);
			return false;
		}
	for (size_t i = 0; i < json_array_len(ips); i++) {
		const struct json *ip = json_array_at(ips, i), *idx = json_get(ip, "interface");

		if (!cniresult_prefix_parse(json_str(json_get(ip, "address")), &p)) {
			cnierror_set(e, CNI_ERR_DECODE, "failed to decode prevResult",
				     "prevResult.ips[%zu].address is not an address in CIDR notation", i);
			return false;
		}
		if (idx && (!json_is_int(idx) || json_int(idx, -1) < 0 ||
			    (size_t)json_int(idx, 0) >= json_array_len(ifs))) {
			cnierror_set(e, CNI_ERR_DECODE, "failed to decode prevResult",
				     "prevResult.ips[%zu].interface is not an index into interfaces", i);
			return false;
		}
	}
	for (size_t i = 0; i < json_array_len(routes); i++)
		if (!cniresult_prefix_parse(json_str(json_get(json_array_at(routes, i), "dst")), &p)) {
			cnierror_set(e, CNI_ERR_DECODE, "failed to decode prevResult",
				     "prevResult.routes[%zu].dst is not a prefix in CIDR notation", i);
			return false;
		}
	return true;
}

struct json *cniresult_convert(const struct json *prev, const char *from, const char *to, struct cnierror *e)
{
	static const char *const if11[] = { "mtu", "socketPath", "pciID", NULL };
	static const char *const route11[] = { "mtu", "advmss", "priority", "table", "scope", NULL };
	static const char *const ipver[] = { "version", NULL };
	const struct json *pv = json_get(prev, "cniVersion");
	struct json *r = NULL, *ips;

	if (!json_is_object(prev)) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode prevResult", "prevResult must be an object");
		return NULL;
	}
	if (pv)
		from = json_str(pv);
	if (!version_known(from)) {
		cnierror_set(e, CNI_ERR_INCOMPATIBLE_VERSION, "incompatible CNI version",
			     "prevResult's cniVersion \"%.40s\" cannot be converted to %s",
			     from ? from : "(not a string)", to);
		return NULL;
	}
	if (!shape_valid(prev, e))
		return NULL;
	if (!(r = json_clone(prev)) || json_object_set(r, "cniVersion", json_new_string(to)))
		goto nomem;
	if (strcmp(from, to) == 0)
		return r;
	if (strcmp(from, "1.1.0") == 0) {
		strip(json_get(r, "interfaces"), if11);
		strip(json_get(r, "routes"), route11);
	}
	ips = json_get(r, "ips");
	if (netconf_version_is_1x(to)) {
		strip(ips, ipver);
	} else {
		for (size_t i = 0; i < json_array_len(ips); i++) {
			struct json *ip = json_array_at(ips, i);
			const char *a = json_str(json_get(ip, "address"));

			if (json_object_set(ip, "version", json_new_string(strchr(a, ':') ? "6" : "4")))
				goto nomem;
		}
	}
	return r;
nomem:
	json_free(r);
	cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory converting prevResult");
	return NULL;
}

static struct json *array_member(struct json *o, const char *key)
{
	struct json *a = json_get(o, key);

	if (a)
		return a;
	if (!(a = json_new_array()) || json_object_set(o, key, a))
		return NULL;
	return a;
}

int cniresult_append(struct json *res, const char *version, const struct cniresult_attach *a)
{
	struct json *ifs, *ips, *routes, *o;
	struct cniresult_prefix p;
	size_t idx;

	if (!(ifs = array_member(res, "interfaces")) || !(ips = array_member(res, "ips")) ||
	    !(routes = array_member(res, "routes")))
		return -ENOMEM;
	idx = json_array_len(ifs);
	if (!(o = json_new_object()) || json_array_append(ifs, o) ||
	    json_object_set(o, "name", json_new_string(a->ifname)) ||
	    (a->sandbox && json_object_set(o, "sandbox", json_new_string(a->sandbox))))
		return -ENOMEM;
	for (size_t i = 0; i < a->naddresses; i++) {
		if (!cniresult_prefix_parse(a->addresses[i], &p))
			return -EINVAL;
		if (!(o = json_new_object()) || json_array_append(ips, o) ||
		    (!netconf_version_is_1x(version) &&
		     json_object_set(o, "version", json_new_string(p.family == AF_INET ? "4" : "6"))) ||
		    json_object_set(o, "address", json_new_string(a->addresses[i])) ||
		    json_object_set(o, "interface", json_new_int((int64_t)idx)))
			return -ENOMEM;
	}
	for (size_t i = 0; i < a->nroutes; i++) {
		if (!cniresult_prefix_parse(a->routes[i], &p))
			return -EINVAL;
		if (!(o = json_new_object()) || json_array_append(routes, o) ||
		    json_object_set(o, "dst", json_new_string(a->routes[i])))
			return -ENOMEM;
	}
	return 0;
}

int cniresult_find_interface(const struct json *res, const char *ifname, const char *sandbox)
{
	const struct json *ifs = json_get(res, "interfaces");

	for (size_t i = 0; i < json_array_len(ifs); i++) {
		const struct json *o = json_array_at(ifs, i);
		const char *name = json_str(json_get(o, "name")), *sb = json_str(json_get(o, "sandbox"));

		if (name && strcmp(name, ifname) == 0 && (!sandbox || (sb && strcmp(sb, sandbox) == 0)))
			return (int)i;
	}
	return -1;
}
