/* lib/cniconf.c: gateway mode's pod ranges from a conflist, and the
 * runtime's pick of the primary configuration in a directory. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cniconf.h"
#include "json.h"

/* ranges of conf as "a,b,c" into out; the return code. */
static int ranges(const char *conf, char *out, size_t len, char *why, size_t whylen)
{
	struct json *j = json_parse(conf, strlen(conf), NULL);
	struct netmap_prefix r[4];
	size_t n = 99, off = 0;
	int ret;

	if (!j)
		fail_msg("bad JSON: %s", conf);
	why[0] = out[0] = '\0';
	ret = cniconf_gateway_ranges(j, r, 4, &n, why, whylen);
	json_free(j);
	if (ret <= 0)
		assert_int_equal(n, 0);
	for (size_t i = 0; i < n; i++) {
		char one[64];
		assert_true(netmap_prefix_format(&r[i], false, one, sizeof(one)) > 0);
		off += (size_t)snprintf(out + off, len - off, "%s%s", i ? "," : "", one);
	}
	return ret;
}

#define BRIDGE(ipam) "{\"type\":\"bridge\",\"ipam\":" ipam "}"
/* A conflist of the plugins given (NULL-terminated), in a static buffer. */
static const char *list_of(const char *first, ...)
{
	static char buf[2048];
	size_t off = (size_t)snprintf(buf, sizeof(buf), "{\"cniVersion\":\"1.0.0\",\"name\":\"pods\",\"plugins\":[%s", first);
	va_list ap;

	va_start(ap, first);
	for (const char *p; (p = va_arg(ap, const char *));)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, ",%s", p);
	va_end(ap);
	snprintf(buf + off, sizeof(buf) - off, "]}");
	return buf;
}
#define LIST(...) list_of(__VA_ARGS__, (const char *)NULL)

static void test_gateway_ranges(void **state)
{
	char out[256], why[256];

	(void)state;
	/* host-local "ranges", both families, and the older "subnet". */
	assert_int_equal(ranges(LIST(BRIDGE("{\"type\":\"host-local\",\"ranges\":[[{\"subnet\":\"10.1.2.0/24\"}],"
					    "[{\"subnet\":\"fd00:1::/64\"},{\"subnet\":\"10.1.2.0/24\"}]]}"),
				     "{\"type\":\"portmap\"}", "{\"type\":\"knit-cni\",\"mode\":\"gateway\"}"),
				out, sizeof(out), why, sizeof(why)),
			 1);
	assert_string_equal(out, "10.1.2.0/24,fd00:1::/64");
	assert_int_equal(ranges(LIST(BRIDGE("{\"type\":\"host-local\",\"subnet\":\"10.9.0.0/16\"}"),
				     "{\"type\":\"knit-cni\",\"mode\":\"identity+gateway\"}"),
				out, sizeof(out), why, sizeof(why)),
			 1);
	assert_string_equal(out, "10.9.0.0/16");
	/* Identity mode (named or by default): nothing to advertise. */
	assert_int_equal(ranges(LIST(BRIDGE("{\"type\":\"host-local\",\"subnet\":\"10.9.0.0/16\"}"),
				     "{\"type\":\"knit-cni\"}"),
				out, sizeof(out), why, sizeof(why)),
			 0);
	assert_int_equal(ranges(LIST(BRIDGE("{\"type\":\"host-local\",\"subnet\":\"10.9.0.0/16\"}"),
				     "{\"type\":\"knit-cni\",\"mode\":\"identity\"}"),
				out, sizeof(out), why, sizeof(why)),
			 0);
	/* No knit-cni in the chain; not a conflist. */
	assert_int_equal(ranges(LIST(BRIDGE("{\"type\":\"host-local\",\"subnet\":\"10.9.0.0/16\"}")), out, sizeof(out),
				why, sizeof(why)),
			 -ENOENT);
	assert_int_equal(ranges("{\"type\":\"bridge\"}", out, sizeof(out), why, sizeof(why)), -ENOENT);
	/* Gateway mode with nothing to advertise, or nonsense. */
	assert_int_equal(ranges(LIST(BRIDGE("{\"type\":\"calico-ipam\"}"), "{\"type\":\"knit-cni\",\"mode\":\"gateway\"}"),
				out, sizeof(out), why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "no plugin of the chain has a host-local IPAM range"));
	assert_int_equal(ranges(LIST(BRIDGE("{\"type\":\"host-local\",\"subnet\":\"usePodCidr\"}"),
				     "{\"type\":\"knit-cni\",\"mode\":\"gateway\"}"),
				out, sizeof(out), why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "\"usePodCidr\" is not a CIDR"));
	assert_int_equal(ranges(LIST(BRIDGE("{\"type\":\"host-local\",\"subnet\":\"10.9.0.0/16\"}"),
				     "{\"type\":\"knit-cni\",\"mode\":7}"),
				out, sizeof(out), why, sizeof(why)),
			 -EINVAL);
	assert_int_equal(ranges(LIST(BRIDGE("{\"type\":\"host-local\",\"ranges\":[[{\"subnet\":\"10.0.1.0/24\"},"
					    "{\"subnet\":\"10.0.2.0/24\"},{\"subnet\":\"10.0.3.0/24\"},"
					    "{\"subnet\":\"10.0.4.0/24\"},{\"subnet\":\"10.0.5.0/24\"}]]}"),
				     "{\"type\":\"knit-cni\",\"mode\":\"gateway\"}"),
				out, sizeof(out), why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "more than 4"));
}

static void put(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_non_null(f = fopen(path, "w"));
	fputs(text, f);
	fclose(f);
}

static void test_primary_and_load(void **state)
{
	char dir[] = "/tmp/test_cniconf.XXXXXX", why[512], *name = NULL;
	struct json *j;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(cniconf_primary(dir, &name), -ENOENT);
	assert_null(cniconf_load(dir, &name, why, sizeof(why)));
	assert_non_null(strstr(why, "no CNI configuration"));
	put(dir, "20-b.conflist", LIST("{\"type\":\"bridge\"}"));
	put(dir, "10-a.conf", "{\"type\":\"bridge\",\"name\":\"a\"}");
	put(dir, "05-z.conflist.knit-orig", "not json");
	put(dir, ".01-hidden.conf", "not json");
	assert_int_equal(cniconf_primary(dir, &name), 0);
	assert_string_equal(name, "10-a.conf");
	free(name);
	assert_non_null(j = cniconf_load(dir, &name, why, sizeof(why)));
	assert_string_equal(json_str(json_get(j, "name")), "a");
	assert_string_equal(name, "10-a.conf");
	free(name);
	json_free(j);
	put(dir, "00-broken.json", "{\"type\":");
	assert_null(cniconf_load(dir, &name, why, sizeof(why)));
	assert_null(name);
	assert_non_null(strstr(why, "00-broken.json is not JSON"));
	for (const char *f = "00-broken.json\0" "10-a.conf\0" "20-b.conflist\0" "05-z.conflist.knit-orig\0" ".01-hidden.conf\0";
	     *f; f += strlen(f) + 1) {
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", dir, f);
		unlink(path);
	}
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gateway_ranges),
		cmocka_unit_test(test_primary_and_load),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
