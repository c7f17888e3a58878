#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>

#include "buf.h"
#include "cniresult.h"
#include "json.h"
#include "knitdapi.h"

enum reach { REACH_OK, REACH_ABSENT, REACH_FAILED };

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;

	return buf_add(b, p, size * n) ? 0 : size * n;
}

/* One request. REACH_OK with *status and *out (the body parsed; NULL when
 * not JSON); otherwise e says why knitd could not be asked. */
static enum reach request(const struct knitdapi *api, const char *method, const char *path,
			  const struct json *body, long timeout_ms, long *status, struct json **out,
			  struct cnierror *e)
{
	struct buf resp = BUF_INIT(KNITDAPI_MAX_RESPONSE), req = BUF_INIT(1 << 20);
	char url[1024], errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL;
	struct stat sb;
	enum reach ret = REACH_FAILED;
	CURL *c = NULL;
	CURLcode rc;

	*out = NULL;
	*status = 0;
	/* The fast path for a node whose knitd is not there at all. */
	if (stat(api->socket, &sb) < 0 && errno == ENOENT) {
		cnierror_set(e, CNI_ERR_TRY_AGAIN, "knitd is not running",
			     "no knitd socket at %s: the knit DaemonSet pod on this node must be Running "
			     "(kubectl -n knit-system get pods -o wide); the runtime retries",
			     api->socket);
		ret = REACH_ABSENT;
		goto out;
	}
	if (!(c = curl_easy_init()) || (body && json_dump(body, &req, 0))) {
		cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni could not build its request to knitd");
		goto out;
	}
	snprintf(url, sizeof(url), "http://local-knitd%s", path);
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, api->socket);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, api->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (body) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, buf_str(&req));
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)req.len);
	}
	rc = curl_easy_perform(c);
	if (rc == CURLE_COULDNT_CONNECT) {
		cnierror_set(e, CNI_ERR_TRY_AGAIN, "knitd is not running",
			     "knitd does not accept connections on %s (%s): the knit DaemonSet pod on this node "
			     "must be Running; the runtime retries",
			     api->socket, errbuf[0] ? errbuf : curl_easy_strerror(rc));
		ret = REACH_ABSENT;
		goto out;
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		cnierror_set(e, CNI_ERR_TRY_AGAIN, "knitd did not answer in time",
			     "%s %s on %s took longer than %ld ms: knitd is busy or stuck (its log says which); "
			     "the runtime retries",
			     method, path, api->socket, timeout_ms);
		goto out;
	}
	if (rc != CURLE_OK) {
		cnierror_set(e, CNI_ERR_TRY_AGAIN, "cannot talk to knitd", "%s %s on %s: %s", method, path,
			     api->socket, errbuf[0] ? errbuf : curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	*out = json_parse_max(buf_str(&resp), resp.len, KNITDAPI_MAX_RESPONSE, NULL);
	ret = REACH_OK;
out:
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	buf_free(&req);
	buf_free(&resp);
	return ret;
}

/* knitd's errors: {"error":"message","code":"Reason"} as the rest of the
 * local API; {"error":{"code","message"}} is read too. */
int knitdapi_error(long http_status, const struct json *body, const char *what, struct cnierror *e)
{
	const struct json *err = json_get(body, "error");
	const char *code = json_str(json_is_object(err) ? json_get(err, "code") : json_get(body, "code"));
	const char *msg = json_str(json_is_object(err) ? json_get(err, "message") : err);
	int cni;
	const char *todo;

	code = code ? code : "";
	msg = msg ? msg : "(no message)";
	if (strcmp(code, "TagNotPermitted") == 0) {
		cni = KNIT_ERR_TAG_REFUSED;
		todo = "the tailnet policy's tagOwners must allow this pod's namespace/ServiceAccount to claim "
		       "the tags in its knit.dev/tags annotation";
	} else if (strcmp(code, "PodNotAuthorized") == 0 || strcmp(code, "PodNotFound") == 0 ||
		   http_status == 403) {
		cni = KNIT_ERR_POD_REFUSED;
		todo = "the operator binds identities only to existing pods scheduled on the asking node";
	} else if (strcmp(code, "Conflict") == 0 || strcmp(code, "IdentityConflict") == 0 ||
		   http_status == 409) {
		cni = KNIT_ERR_CONFLICT;
		todo = "another pod holds this attachment, or the interface name is taken in the pod: "
		       "check the plugin's ifName";
	} else if (http_status == 503 || http_status == 504 || strcmp(code, "NotReady") == 0 ||
		   strcmp(code, "NeedsLogin") == 0 || strcmp(code, "ControlUnreachable") == 0) {
		cni = CNI_ERR_TRY_AGAIN;
		todo = "knitd is not in the tailnet yet (knit status on the node says why); the runtime retries";
	} else if (http_status == 400) {
		cni = KNIT_ERR_KNITD;
		todo = "knitd and knit-cni disagree on the local API: install matching versions";
	} else {
		cni = KNIT_ERR_KNITD;
		todo = "knitd's log on this node says more";
	}
	cnierror_set(e, cni, "knitd refused the request", "%s: knitd answered HTTP %ld %s: %s; %s", what,
		     http_status, code[0] ? code : "(no code)", msg, todo);
	return cni;
}

static char *dup_str(const struct json *o, const char *key)
{
	const char *s = json_str(json_get(o, key));

	return s ? strdup(s) : NULL;
}

static bool prefixes_parse(const struct json *a, const char *key, char ***out, size_t *n, char *why,
			   size_t whylen)
{
	struct cniresult_prefix p;

	*out = NULL;
	*n = 0;
	if (!json_is_array(a)) {
		errbuf_printf(why, whylen, "\"%s\" is not an array", key);
		return false;
	}
	if (json_array_len(a) == 0)
		return true;
	if (json_array_len(a) > 64 || !(*out = calloc(json_array_len(a), sizeof(**out)))) {
		errbuf_printf(why, whylen, "\"%s\" has too many entries", key);
		return false;
	}
	for (size_t i = 0; i < json_array_len(a); i++) {
		const char *s = json_str(json_array_at(a, i));

		if (!cniresult_prefix_parse(s, &p)) {
			errbuf_printf(why, whylen, "%s[%zu] is not a prefix in CIDR notation", key, i);
			return false;
		}
		if (!((*out)[i] = strdup(s))) {
			errbuf_printf(why, whylen, "out of memory");
			return false;
		}
		++*n;
	}
	return true;
}

bool knitdapi_identity_parse(const struct json *o, struct knitdapi_identity *id, char *why, size_t whylen)
{
	memset(id, 0, sizeof(*id));
	if (!json_is_object(o)) {
		errbuf_printf(why, whylen, "an identity is not an object");
		return false;
	}
	id->containerid = dup_str(o, "containerID");
	id->ifname = dup_str(o, "ifName");
	id->network = dup_str(o, "network");
	id->interface = dup_str(o, "interface");
	id->device_name = dup_str(o, "deviceName");
	if (!id->interface) {
		errbuf_printf(why, whylen, "\"interface\" is missing");
		goto fail;
	}
	if (!prefixes_parse(json_get(o, "addresses"), "addresses", &id->addresses, &id->naddresses, why, whylen) ||
	    !prefixes_parse(json_get(o, "routes"), "routes", &id->routes, &id->nroutes, why, whylen))
		goto fail;
	if (id->naddresses == 0) {
		errbuf_printf(why, whylen, "\"addresses\" is empty");
		goto fail;
	}
	return true;
fail:
	knitdapi_identity_free(id);
	return false;
}

void knitdapi_identity_free(struct knitdapi_identity *id)
{
	if (!id)
		return;
	free(id->containerid);
	free(id->ifname);
	free(id->network);
	free(id->interface);
	free(id->device_name);
	for (size_t i = 0; id->addresses && i < id->naddresses; i++)
		free(id->addresses[i]);
	free(id->addresses);
	for (size_t i = 0; id->routes && i < id->nroutes; i++)
		free(id->routes[i]);
	free(id->routes);
	memset(id, 0, sizeof(*id));
}

static int put_str(struct json *o, const char *key, const char *v)
{
	return v ? json_object_set(o, key, json_new_string(v)) : 0;
}

int knitdapi_attach(const struct knitdapi *api, const struct knitdapi_attach_req *r, long timeout_ms,
		    struct knitdapi_identity *out, bool *unsure, struct cnierror *e)
{
	struct json *body = json_new_object(), *tags = json_new_array(), *resp = NULL;
	char why[256];
	enum reach reach;
	long status;
	int ret;

	memset(out, 0, sizeof(*out));
	*unsure = false;
	if (!body || !tags || json_object_set(body, "tags", tags))
		goto nomem;
	for (size_t i = 0; i < r->ntags; i++)
		if (json_array_append(tags, json_new_string(r->tags[i])))
			goto nomem;
	if (put_str(body, "containerID", r->containerid) || put_str(body, "ifName", r->ifname) ||
	    put_str(body, "netns", r->netns) || put_str(body, "network", r->network) ||
	    put_str(body, "podNamespace", r->pod_namespace) || put_str(body, "podName", r->pod_name) ||
	    put_str(body, "podUID", r->pod_uid) || put_str(body, "hostname", r->hostname))
		goto nomem;
	tags = NULL;
	if ((reach = request(api, "POST", "/localapi/v1/identities", body, timeout_ms, &status, &resp, e)) !=
	    REACH_OK) {
		*unsure = reach == REACH_FAILED;
		ret = e->code;
		goto out;
	}
	if (status != 200 || !resp || json_get(resp, "error")) {
		ret = knitdapi_error(status, resp, "attaching the pod's identity", e);
		goto out;
	}
	/* From here knitd made the identity: a caller that cannot use it
	 * rolls it back. */
	*unsure = true;
	if (!knitdapi_identity_parse(resp, out, why, sizeof(why))) {
		cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
			     "POST /localapi/v1/identities: %s; install matching knitd and knit-cni versions", why);
		ret = e->code;
		goto out;
	}
	if (strcmp(out->interface, r->ifname) != 0) {
		cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
			     "knitd made interface \"%.32s\", knit-cni asked for \"%s\"", out->interface, r->ifname);
		knitdapi_identity_free(out);
		ret = e->code;
		goto out;
	}
	*unsure = false;
	ret = 0;
	goto out;
nomem:
	json_free(tags);
	cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory");
	ret = e->code;
out:
	json_free(body);
	json_free(resp);
	return ret;
}

int knitdapi_detach(const struct knitdapi *api, const char *containerid, const char *ifname, long timeout_ms,
		    bool *absent, struct cnierror *e)
{
	char path[1200];
	struct json *resp = NULL;
	char *cid = NULL, *ifn = NULL;
	enum reach reach;
	long status;
	int ret;

	*absent = false;
	cid = curl_easy_escape(NULL, containerid, 0);
	ifn = curl_easy_escape(NULL, ifname, 0);
	if (!cid || !ifn) {
		cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory");
		ret = e->code;
		goto out;
	}
	snprintf(path, sizeof(path), "/localapi/v1/identities/%s/%s", cid, ifn);
	reach = request(api, "DELETE", path, NULL, timeout_ms, &status, &resp, e);
	if (reach == REACH_ABSENT) {
		*absent = true;
		ret = 0;
	} else if (reach != REACH_OK) {
		ret = e->code;
	} else if (status == 200 || status == 404) {
		ret = 0;
	} else {
		ret = knitdapi_error(status, resp, "detaching the pod's identity", e);
	}
out:
	curl_free(cid);
	curl_free(ifn);
	json_free(resp);
	return ret;
}

int knitdapi_list(const struct knitdapi *api, long timeout_ms, struct knitdapi_identity **ids, size_t *n,
		  bool *absent, struct cnierror *e)
{
	struct json *resp = NULL;
	const struct json *arr;
	enum reach reach;
	char why[256];
	long status;
	int ret = 0;

	*ids = NULL;
	*n = 0;
	*absent = false;
	reach = request(api, "GET", "/localapi/v1/identities", NULL, timeout_ms, &status, &resp, e);
	if (reach == REACH_ABSENT)
		*absent = true;
	if (reach != REACH_OK) {
		ret = e->code;
		goto out;
	}
	if (status != 200 || !resp || json_get(resp, "error")) {
		ret = knitdapi_error(status, resp, "listing pod identities", e);
		goto out;
	}
	arr = json_get(resp, "identities");
	if (!json_is_array(arr)) {
		cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
			     "GET /localapi/v1/identities: \"identities\" is not an array");
		ret = e->code;
		goto out;
	}
	if (json_array_len(arr) && !(*ids = calloc(json_array_len(arr), sizeof(**ids)))) {
		cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory");
		ret = e->code;
		goto out;
	}
	for (size_t i = 0; i < json_array_len(arr); i++) {
		bool ok = knitdapi_identity_parse(json_array_at(arr, i), &(*ids)[*n], why, sizeof(why));

		if (ok && (!(*ids)[*n].containerid || !(*ids)[*n].ifname)) {
			ok = false;
			snprintf(why, sizeof(why), "containerID or ifName missing");
		}
		if (!ok) {
			knitdapi_identity_free(&(*ids)[*n]);
			cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
				     "GET /localapi/v1/identities: identities[%zu]: %s", i, why);
			ret = e->code;
			goto out;
		}
		++*n;
	}
out:
	if (ret) {
		for (size_t i = 0; i < *n; i++)
			knitdapi_identity_free(&(*ids)[i]);
		free(*ids);
		*ids = NULL;
		*n = 0;
	}
	json_free(resp);
	return ret;
}

int knitdapi_status(const struct knitdapi *api, long timeout_ms, struct json **st, bool *absent,
		    struct cnierror *e)
{
	enum reach reach;
	long status;

	*absent = false;
	reach = request(api, "GET", "/localapi/v1/status", NULL, timeout_ms, &status, st, e);
	if (reach == REACH_ABSENT)
		*absent = true;
	if (reach != REACH_OK)
		return e->code;
	if (status != 200 || !*st || json_get(*st, "error")) {
		int ret = knitdapi_error(status, *st, "asking knitd's status", e);

		json_free(*st);
		*st = NULL;
		return ret;
	}
	return 0;
}
